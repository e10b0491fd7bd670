//! Costs near the largest finite value, mixed with small, tiny and forbidden ones: the
//! dual variables overflow unless the solver rescales. Optimality is judged against
//! exhaustive search (and the textbook Hungarian method) on copies scaled down by a power
//! of two, where nothing overflows and totals are exact up to one rounding per entry.

use super::*;

/// Entries for a type whose largest finite value is `max`.
fn extreme_entry(max: f64) -> impl Strategy<Value = f64> {
    prop_oneof![
        5 => (-1.0f64..=1.0).prop_map(move |u| u * max),
        1 => prop_oneof![Just(max), Just(-max), Just(max / 2.0)],
        2 => (-12i32..12).prop_map(f64::from),
        1 => prop_oneof![Just(1e-300), Just(-5e-324), Just(0.5)],
        1 => Just(f64::INFINITY),
    ]
}

fn extreme_problem(max: f64) -> impl Strategy<Value = (usize, usize, Vec<f64>)> {
    (1usize..=5, 1usize..=5)
        .prop_flat_map(move |(r, c)| (Just(r), Just(c), vec(extreme_entry(max), r * c)))
}

/// `2^-64`: every scaled total below is far from overflow.
const DOWN: f64 = 1.0 / 18_446_744_073_709_551_616.0;

/// Check `got` (the solver's answer on `cost`, entries as stored in the solved type)
/// against exhaustive search: the same error when infeasible, otherwise a total within
/// `rel` of the largest finite magnitude of the optimum (overflow gives errors of order 1).
fn check_extreme(
    cost: &[f64],
    rows: usize,
    cols: usize,
    maximize: bool,
    got: Result<Assignment, LsapError>,
    rel: f64,
) -> Result<(), TestCaseError> {
    let scaled: Vec<f64> = cost.iter().map(|&x| x * DOWN).collect();
    let largest = scaled
        .iter()
        .filter(|x| x.is_finite())
        .fold(0.0f64, |m, x| m.max(x.abs()));
    match (brute_force(&scaled, rows, cols, maximize), got) {
        (None, Err(e)) => prop_assert_eq!(e, LsapError::Infeasible),
        (Some(best), Ok(a)) => {
            let total: f64 = a
                .rows
                .iter()
                .zip(&a.cols)
                .map(|(&i, &j)| scaled[i * cols + j])
                .sum();
            let tol = rel * largest * (rows.min(cols) as f64);
            prop_assert!(
                (total - best).abs() <= tol,
                "total {} vs optimum {} (scaled by 2^-64; cost {:?})",
                total,
                best,
                cost
            );
        }
        (best, got) => prop_assert!(false, "optimum {:?} but got {:?}", best, got),
    }
    Ok(())
}

fn forbid_for(maximize: bool, cost: &mut [f64]) {
    if maximize {
        for x in cost {
            if *x == f64::INFINITY {
                *x = f64::NEG_INFINITY;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn extreme_f64_is_optimal_or_infeasible(
        (rows, cols, mut cost) in extreme_problem(f64::MAX),
        maximize: bool,
        layout in 0u8..3,
    ) {
        forbid_for(maximize, &mut cost);
        let got = solve_pairs(&cost, rows, cols, maximize, layout, false);
        check_extreme(&cost, rows, cols, maximize, got, 1e-12)?;
    }

    #[test]
    fn extreme_f32_is_optimal_or_infeasible(
        (rows, cols, mut cost) in extreme_problem(f64::from(f32::MAX)),
        maximize: bool,
        layout in 0u8..3,
    ) {
        forbid_for(maximize, &mut cost);
        // The entries as f32 holds them (exact for the large ones, tiny ones flush).
        for x in &mut cost {
            *x = f64::from(*x as f32);
        }
        let got = solve_pairs(&cost, rows, cols, maximize, layout, true);
        check_extreme(&cost, rows, cols, maximize, got, 1e-4)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Larger huge-valued matrices against the textbook Hungarian method on a scaled copy.
    #[test]
    fn extreme_larger_matches_hungarian_reference(
        (rows, cols) in (1usize..30, 1usize..30),
        seed in vec(-1.0f64..=1.0, 900),
        spread in prop_oneof![Just(1.0f64), Just(1e-3)],
        transposed: bool,
    ) {
        let (n, m) = (rows.min(cols), rows.max(cols));
        // Some rows huge, some moderate: potentials mix magnitudes.
        let cost: Vec<f64> = seed[..n * m]
            .iter()
            .enumerate()
            .map(|(k, &u)| match u {
                _ if (k / m) % 3 == 2 => u * spread * 1e300,
                // Exact extremes are the likeliest to overflow.
                _ if u.abs() > 0.8 => u.signum() * f64::MAX,
                _ => u * f64::MAX,
            })
            .collect();
        let scaled: Vec<f64> = cost.iter().map(|&x| x * DOWN).collect();
        let expected = hungarian_reference(&scaled, n, m);
        let a = if transposed {
            let t: Vec<f64> = (0..n * m).map(|k| cost[(k % n) * m + k / n]).collect();
            let a = solve_pairs(&t, m, n, false, 0, false).unwrap();
            Assignment { rows: a.cols, cols: a.rows }
        } else {
            solve_pairs(&cost, n, m, false, 0, false).unwrap()
        };
        let total: f64 = a.rows.iter().zip(&a.cols).map(|(&i, &j)| scaled[i * m + j]).sum();
        let largest = scaled.iter().fold(0.0f64, |x, y| x.max(y.abs()));
        prop_assert!((total - expected).abs() <= 1e-12 * largest * n as f64, "{} vs {}", total, expected);
    }
}

#[test]
fn issue_example_is_optimal() {
    // Issue 15: the duals overflowed and [0, 1] (total 2e307) came back.
    let cost = [1.6e308, -1.45e308, 8.7e307, -1.4e308];
    let a = linear_sum_assignment(MatrixView::row_major(&cost, 2, 2).unwrap(), false).unwrap();
    assert_eq!((a.rows, a.cols), (vec![0, 1], vec![1, 0]));
    let a = linear_sum_assignment(MatrixView::row_major(&cost, 2, 2).unwrap(), true).unwrap();
    assert_eq!((a.rows, a.cols), (vec![0, 1], vec![0, 1]));
    // The same in f32 near its own maximum.
    let c32 = [3.0e38f32, -3.0e38, 1.0e38, -2.9e38];
    let a = linear_sum_assignment(MatrixView::row_major(&c32, 2, 2).unwrap(), false).unwrap();
    assert_eq!(a.cols, vec![1, 0]);
}

#[test]
fn huge_feasible_matrix_is_not_called_infeasible() {
    // Every entry finite, so a complete assignment exists; the first overflowed to
    // "infeasible" before the fix (found by random search; scipy solves it).
    let max = f64::MAX;
    let cases: [(usize, Vec<f64>); 4] = [
        (
            3,
            vec![
                -7.012601676675341e307,
                -1.284304064778573e308,
                1.267557864883568e308,
                -max,
                -max,
                6.3839377558322e307,
                -max,
                -max,
                8.937316190795758e307,
            ],
        ),
        (2, vec![max, -max, -max, max]),
        (2, vec![-max, max, max, -max]),
        (2, vec![max, max, -max, -max]),
    ];
    for (n, cost) in cases {
        for maximize in [false, true] {
            let view = MatrixView::row_major(&cost, n, n).unwrap();
            let a = linear_sum_assignment(view, maximize).unwrap();
            let scaled: Vec<f64> = cost.iter().map(|x| x * DOWN).collect();
            let want = brute_force(&scaled, n, n, maximize).unwrap();
            let total: f64 = a
                .rows
                .iter()
                .zip(&a.cols)
                .map(|(&i, &j)| scaled[i * n + j])
                .sum();
            assert_eq!(total, want, "{cost:?} maximize={maximize}");
        }
    }
}

#[test]
fn out_of_memory_is_an_error() {
    // A broadcast row repeated 2^62 times: the working copy's size overflows `isize`, so
    // the allocation fails whatever the system's overcommit policy.
    let row = [1.0f64, 2.0, 3.0];
    // SAFETY: a zero row stride keeps every element inside `row`.
    let view = unsafe { MatrixView::from_raw_parts(row.as_ptr(), 1 << 62, 3, 0, 1) };
    assert_eq!(
        linear_sum_assignment(view, false),
        Err(LsapError::OutOfMemory {
            rows: 1 << 62,
            cols: 3
        })
    );
    let msg = LsapError::OutOfMemory { rows: 2, cols: 3 }.to_string();
    assert!(msg.contains("2 x 3"), "{msg}");
}
