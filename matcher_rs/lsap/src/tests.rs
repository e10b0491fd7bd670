//! Unit and property tests against independent oracles: exhaustive search over all
//! assignments on small matrices, and a textbook O(n^3) Hungarian method on larger ones.

use super::*;
use proptest::collection::vec;
use proptest::prelude::*;

mod extreme;

/// The best total over every injective map of the shorter side into the longer one,
/// skipping forbidden pairs; `None` when no complete assignment exists.
fn brute_force(cost: &[f64], rows: usize, cols: usize, maximize: bool) -> Option<f64> {
    struct Search {
        c: Vec<f64>,
        n: usize,
        m: usize,
        used: Vec<bool>,
        best: Option<f64>,
    }
    impl Search {
        fn go(&mut self, i: usize, acc: f64) {
            if i == self.n {
                if self.best.is_none_or(|b| acc < b) {
                    self.best = Some(acc);
                }
                return;
            }
            for j in 0..self.m {
                let x = self.c[i * self.m + j];
                if !self.used[j] && x != f64::INFINITY {
                    self.used[j] = true;
                    self.go(i + 1, acc + x);
                    self.used[j] = false;
                }
            }
        }
    }
    let sign = if maximize { -1.0 } else { 1.0 };
    let (n, m) = (rows.min(cols), rows.max(cols));
    // Oriented n x m, negated when maximising: minimise over injective row maps.
    let c = (0..n * m)
        .map(|k| {
            let (i, j) = (k / m, k % m);
            sign * if rows <= cols {
                cost[i * cols + j]
            } else {
                cost[j * cols + i]
            }
        })
        .collect();
    let mut s = Search {
        c,
        n,
        m,
        used: vec![false; m],
        best: None,
    };
    s.go(0, 0.0);
    s.best.map(|b| sign * b)
}

/// Textbook Hungarian method with potentials (rows <= cols, finite costs): an oracle
/// for sizes exhaustive search cannot reach. Returns the minimum total.
fn hungarian_reference(cost: &[f64], n: usize, m: usize) -> f64 {
    assert!(n <= m);
    let (mut u, mut v) = (vec![0.0; n + 1], vec![0.0; m + 1]);
    let (mut p, mut way) = (vec![0usize; m + 1], vec![0usize; m + 1]);
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![f64::INFINITY; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let (i0, mut delta, mut j1) = (p[j0], f64::INFINITY, 0);
            for j in 1..=m {
                if !used[j] {
                    let cur = cost[(i0 - 1) * m + (j - 1)] - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    (1..=m)
        .filter(|&j| p[j] != 0)
        .map(|j| cost[(p[j] - 1) * m + (j - 1)])
        .sum()
}

fn assert_valid(a: &Assignment, rows: usize, cols: usize) {
    assert_eq!(a.rows.len(), rows.min(cols));
    assert!(a.rows.windows(2).all(|w| w[0] < w[1]));
    let mut seen = vec![false; cols];
    for &j in &a.cols {
        assert!(!seen[j]);
        seen[j] = true;
    }
}

/// Solve `cost` stored in the given layout and precision; returns the total in f64.
fn solve_as(
    cost: &[f64],
    rows: usize,
    cols: usize,
    maximize: bool,
    layout: u8,
    single: bool,
) -> Result<f64, LsapError> {
    let a = solve_pairs(cost, rows, cols, maximize, layout, single)?;
    let value = |i: usize, j: usize| {
        let x = cost[i * cols + j];
        if single {
            f64::from(x as f32)
        } else {
            x
        }
    };
    Ok(a.rows.iter().zip(&a.cols).map(|(&i, &j)| value(i, j)).sum())
}

/// Solve `cost` (row-major f64) stored in the given layout and precision.
fn solve_pairs(
    cost: &[f64],
    rows: usize,
    cols: usize,
    maximize: bool,
    layout: u8,
    single: bool,
) -> Result<Assignment, LsapError> {
    fn run<T: Float>(
        data: &[T],
        rows: usize,
        cols: usize,
        maximize: bool,
        layout: u8,
    ) -> Result<Assignment, LsapError> {
        let view = match layout {
            0 => MatrixView::row_major(data, rows, cols),
            1 => MatrixView::col_major(data, rows, cols),
            // Row-major with two padding columns: strided rows.
            _ => MatrixView::strided(data, rows, cols, cols + 2, 1),
        }
        .unwrap();
        let a = linear_sum_assignment(view, maximize);
        // The owned copy (what the Python binding solves) gives the same answer.
        let packed = Packed::new(view, maximize, Vec::new());
        assert_eq!(packed.and_then(|p| Solver::new().solve_packed(&p)), a);
        // The copy made with the AVX loop (the default where the CPU has it) and with the
        // baseline one are the same, errors included.
        let previous = set_avx(false);
        let plain = Packed::new(view, maximize, Vec::new()).map(Packed::into_buffer);
        set_avx(previous);
        let fast = Packed::new(view, maximize, Vec::new()).map(Packed::into_buffer);
        assert_eq!(plain, fast);
        let a = a?;
        assert_valid(&a, rows, cols);
        Ok(a)
    }
    let stored: Vec<f64> = match layout {
        0 => cost.to_vec(),
        1 => (0..rows * cols)
            .map(|k| cost[(k % rows) * cols + k / rows])
            .collect(),
        _ => (0..rows * (cols + 2))
            .map(|k| {
                if k % (cols + 2) < cols {
                    cost[(k / (cols + 2)) * cols + k % (cols + 2)]
                } else {
                    f64::NAN
                }
            })
            .collect(),
    };
    if single {
        let d: Vec<f32> = stored.iter().map(|&x| x as f32).collect();
        run(&d, rows, cols, maximize, layout)
    } else {
        run(&stored, rows, cols, maximize, layout)
    }
}

fn entry() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => (-12i32..12).prop_map(f64::from),
        1 => Just(f64::INFINITY),
    ]
}

fn small_problem() -> impl Strategy<Value = (usize, usize, Vec<f64>)> {
    (0usize..=6, 0usize..=6).prop_flat_map(|(r, c)| (Just(r), Just(c), vec(entry(), r * c)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    /// Integer-valued costs make every total exact in f32 and f64, so totals must be equal.
    #[test]
    fn matches_brute_force(
        (rows, cols, mut cost) in small_problem(),
        maximize: bool,
        single: bool,
        layout in 0u8..3,
    ) {
        if maximize {
            for x in &mut cost {
                if *x == f64::INFINITY {
                    *x = f64::NEG_INFINITY;
                }
            }
        }
        let expected = brute_force(&cost, rows, cols, maximize);
        let got = solve_as(&cost, rows, cols, maximize, layout, single);
        match expected {
            Some(best) => prop_assert_eq!(got, Ok(best)),
            None => prop_assert_eq!(got, Err(LsapError::Infeasible)),
        }
    }

    /// Real-valued costs with many near-ties, compared with a tolerance.
    #[test]
    fn matches_brute_force_real(
        (rows, cols) in (1usize..=6, 1usize..=6),
        seed in vec(0.0f64..1.0, 36),
        maximize: bool,
        single: bool,
    ) {
        let cost: Vec<f64> = seed[..rows * cols].iter().map(|&x| (x * 8.0).round() / 8.0 + x * 1e-3).collect();
        let expected = brute_force(&cost, rows, cols, maximize).unwrap();
        let got = solve_as(&cost, rows, cols, maximize, 0, single).unwrap();
        prop_assert!((got - expected).abs() <= 1e-4 * (1.0 + expected.abs()), "{got} vs {expected}");
    }

    /// Larger matrices against the textbook Hungarian method (both orientations).
    #[test]
    fn matches_hungarian_reference(
        (rows, cols) in (1usize..40, 1usize..40),
        seed in vec(0u32..1000, 1600),
        range in prop_oneof![Just(3u32), Just(50), Just(1000)],
        transposed: bool,
    ) {
        // A small range gives many ties, the hard case for the start heuristics.
        let (n, m) = (rows.min(cols), rows.max(cols));
        let cost: Vec<f64> = seed[..n * m].iter().map(|&x| f64::from(x % range)).collect();
        let expected = hungarian_reference(&cost, n, m);
        let got = if transposed {
            let t: Vec<f64> = (0..n * m).map(|k| cost[(k % n) * m + k / n]).collect();
            solve_as(&t, m, n, false, 0, false)
        } else {
            solve_as(&cost, n, m, false, 0, false)
        };
        prop_assert_eq!(got, Ok(expected));
    }

    /// Square matrices take the square start (the free columns' duals raised before the
    /// augmenting row reduction): integer costs with ties, forbidden pairs and both
    /// directions, against exhaustive search.
    #[test]
    fn square_matches_brute_force(
        n in 1usize..=7,
        seed in vec(0u32..1000, 49),
        range in prop_oneof![Just(1u32), Just(2), Just(4), Just(30)],
        forbidden in prop_oneof![Just(0u32), Just(10), Just(35)],
        maximize: bool,
        single: bool,
        layout in 0u8..3,
    ) {
        let sign = if maximize { -1.0 } else { 1.0 };
        let cost: Vec<f64> = seed[..n * n]
            .iter()
            .map(|&x| if x % 100 < forbidden { sign * f64::INFINITY } else { f64::from(x % range) })
            .collect();
        let expected = brute_force(&cost, n, n, maximize);
        let got = solve_as(&cost, n, n, maximize, layout, single);
        match expected {
            Some(best) => prop_assert_eq!(got, Ok(best)),
            None => prop_assert_eq!(got, Err(LsapError::Infeasible)),
        }
    }

    /// Larger square matrices (where most searches start from raised duals) against the
    /// textbook Hungarian method, maximising too (on the negated matrix).
    #[test]
    fn square_matches_hungarian_reference(
        n in 1usize..60,
        seed in vec(0u32..100_000, 3600),
        range in prop_oneof![Just(2u32), Just(8), Just(60), Just(100_000)],
        maximize: bool,
        single: bool,
    ) {
        let cost: Vec<f64> = seed[..n * n].iter().map(|&x| f64::from(x % range)).collect();
        let oriented: Vec<f64> = if maximize { cost.iter().map(|&x| -x).collect() } else { cost.clone() };
        let expected = hungarian_reference(&oriented, n, n);
        let got = solve_as(&cost, n, n, maximize, 0, single && range <= 1 << 20);
        prop_assert_eq!(got.map(|t| if maximize { -t } else { t }), Ok(expected));
    }

    /// Any bytes: never panics, and an `Ok` is a valid assignment avoiding forbidden pairs.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..800)) {
        fuzz_input::check_bytes(&bytes);
    }
}

/// Square matrices whose structure defeats the cheap starts: all equal, one forbidden
/// column or row, a single allowed diagonal, and integer costs large enough that every
/// row goes through the search, at sizes where the square start raises the free columns.
#[test]
fn square_start_structured() {
    let inf = f64::INFINITY;
    for n in [1usize, 2, 3, 9, 17, 64, 130] {
        let mut cases: Vec<Vec<f64>> = vec![vec![3.0; n * n]];
        // Costs i * j: the anti-diagonal is optimal, every row prefers column 0.
        cases.push((0..n * n).map(|k| ((k / n) * (k % n)) as f64).collect());
        // Only the diagonal and the first column allowed.
        cases.push(
            (0..n * n)
                .map(|k| {
                    if k / n == k % n || k % n == 0 {
                        (k % 7) as f64
                    } else {
                        inf
                    }
                })
                .collect(),
        );
        // One column entirely forbidden (infeasible when n > 0).
        cases.push(
            (0..n * n)
                .map(|k| if k % n == n / 2 { inf } else { (k % 5) as f64 })
                .collect(),
        );
        let mut state = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        cases.push(
            (0..n * n)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1);
                    ((state >> 33) % (n as u64)) as f64
                })
                .collect(),
        );
        for cost in &cases {
            for maximize in [false, true] {
                let signed: Vec<f64> = cost
                    .iter()
                    .map(|&x| if maximize && x == inf { -inf } else { x })
                    .collect();
                let got = solve_as(&signed, n, n, maximize, 0, false);
                if n <= 9 {
                    match brute_force(&signed, n, n, maximize) {
                        Some(best) => assert_eq!(got, Ok(best), "n {n} {signed:?}"),
                        None => assert_eq!(got, Err(LsapError::Infeasible)),
                    }
                } else if signed
                    .iter()
                    .enumerate()
                    .any(|(k, x)| k % n == n / 2 && x.is_finite())
                {
                    // Feasible (the identity avoids forbidden pairs): forbidden pairs as a
                    // cost no optimum can afford, for the finite reference.
                    let oriented: Vec<f64> = signed
                        .iter()
                        .map(|&x| {
                            if x.is_finite() {
                                if maximize {
                                    -x
                                } else {
                                    x
                                }
                            } else {
                                1e9
                            }
                        })
                        .collect();
                    let want = hungarian_reference(&oriented, n, n);
                    assert_eq!(
                        got.map(|t| if maximize { -t } else { t }),
                        Ok(want),
                        "n {n}"
                    );
                } else {
                    assert_eq!(got, Err(LsapError::Infeasible));
                }
            }
        }
    }
}

#[test]
fn known_example() {
    let cost = [4.0, 1.0, 3.0, 2.0, 0.0, 5.0, 3.0, 2.0, 2.0];
    let a = linear_sum_assignment(MatrixView::row_major(&cost, 3, 3).unwrap(), false).unwrap();
    assert_eq!((a.rows, a.cols), (vec![0, 1, 2], vec![1, 0, 2]));
}

#[test]
fn row_reduction_takes_the_first_free_tie() {
    // Every assignment of rows 1 to 3 is optimal, so the answer is the row reduction's:
    // row 0 takes column 2, leaving column 0 free before a taken one; the search for a
    // free tie starts at the first free column, never past it. Also with 20 columns
    // (blocks of lanes and a tail) and a zero inside the taken prefix.
    let cost = [
        1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    ];
    for maximize in [false, true] {
        let view = MatrixView::row_major(&cost, 4, 4).unwrap();
        let a = if maximize {
            let neg: Vec<f64> = cost.iter().map(|&x| -x).collect();
            linear_sum_assignment(MatrixView::row_major(&neg, 4, 4).unwrap(), true)
        } else {
            linear_sum_assignment(view, false)
        };
        assert_eq!(a.unwrap().cols, [2, 0, 1, 3]);
        let packed = Packed::new(view, false, Vec::new()).unwrap();
        assert_eq!(
            Solver::new().solve_packed(&packed).unwrap().cols,
            [2, 0, 1, 3]
        );
    }
    let n = 20;
    let mut wide = vec![0.0f32; n * n];
    wide[..n].fill(1.0);
    wide[17] = 0.0; // row 0 takes column 17
    wide[n..2 * n].fill(1.0);
    wide[n + 3] = 0.0; // row 1 takes column 3
    let a = linear_sum_assignment(MatrixView::row_major(&wide, n, n).unwrap(), false).unwrap();
    let mut want = vec![17, 3, 0, 1, 2];
    want.extend((4..n).filter(|&j| j != 17));
    assert_eq!(a.cols, want);
}

#[test]
fn constant_matrix_gives_identity() {
    for (r, c) in [(4, 4), (3, 7), (7, 3), (1, 5), (5, 1)] {
        let cost = vec![2.5f32; r * c];
        for maximize in [false, true] {
            let a = linear_sum_assignment(MatrixView::row_major(&cost, r, c).unwrap(), maximize)
                .unwrap();
            let k = r.min(c);
            assert_eq!(a.rows, (0..k).collect::<Vec<_>>());
            assert_eq!(a.cols, (0..k).collect::<Vec<_>>());
        }
    }
}

#[test]
fn empty_matrices() {
    for (r, c) in [(0, 0), (0, 4), (4, 0)] {
        let a =
            linear_sum_assignment(MatrixView::<f64>::row_major(&[], r, c).unwrap(), false).unwrap();
        assert!(a.rows.is_empty() && a.cols.is_empty());
    }
}

#[test]
fn error_messages_and_signs() {
    let inf = f64::INFINITY;
    let solve =
        |d: [f64; 4], max| linear_sum_assignment(MatrixView::row_major(&d, 2, 2).unwrap(), max);
    assert_eq!(
        solve([1.0, f64::NAN, 3.0, 2.0], false),
        Err(LsapError::InvalidEntries)
    );
    assert_eq!(
        solve([1.0, -inf, -inf, 2.0], false),
        Err(LsapError::InvalidEntries)
    );
    assert_eq!(
        solve([1.0, inf, inf, 2.0], true),
        Err(LsapError::InvalidEntries)
    );
    assert_eq!(
        solve([1.0, inf, inf, inf], false),
        Err(LsapError::Infeasible)
    );
    assert_eq!(
        solve([1.0, -inf, -inf, -inf], true),
        Err(LsapError::Infeasible)
    );
    assert_eq!(
        solve([1.0, -inf, -inf, 2.0], true).unwrap().cols,
        vec![0, 1]
    );
    assert_eq!(
        LsapError::InvalidEntries.to_string(),
        "matrix contains invalid numeric entries"
    );
    assert_eq!(
        LsapError::Infeasible.to_string(),
        "cost matrix is infeasible"
    );
}

#[test]
fn negative_and_zero_strides() {
    // Rows read backwards through a raw view, as numpy's `a[::-1]` would pass them.
    let data = [1.0f64, 9.0, 9.0, 9.0, 9.0, 1.0];
    // SAFETY: every (i, j) in 3x2 with row stride -2 from the last row stays inside `data`.
    let view = unsafe { MatrixView::from_raw_parts(data.as_ptr().add(4), 3, 2, -2, 1) };
    let a = linear_sum_assignment(view, false).unwrap();
    assert_eq!((a.rows, a.cols), (vec![0, 2], vec![1, 0]));
    // A broadcast row (stride 0) repeated three times.
    let row = [3.0f32, 1.0, 2.0];
    let view = MatrixView::strided(&row, 3, 3, 0, 1).unwrap();
    assert_eq!(linear_sum_assignment(view, false).unwrap().total(view), 6.0);
}

#[test]
fn view_bounds_are_checked() {
    let d = [0.0f64; 6];
    assert!(MatrixView::row_major(&d, 2, 4).is_err());
    assert!(MatrixView::strided(&d, 2, 3, 4, 1).is_err());
    assert!(MatrixView::strided(&d, 2, 2, 4, 1).is_ok());
}

#[test]
fn larger_random_f32_matches_f64() {
    let mut rng = Lcg(0x2545_f491_4f6c_dd1d);
    for (r, c) in [(200, 200), (150, 300), (300, 150)] {
        let d: Vec<f64> = (0..r * c).map(|_| f64::from(rng.below(1000))).collect();
        let s: Vec<f32> = d.iter().map(|&x| x as f32).collect();
        let a = linear_sum_assignment(MatrixView::row_major(&d, r, c).unwrap(), false).unwrap();
        let b = linear_sum_assignment(MatrixView::row_major(&s, r, c).unwrap(), false).unwrap();
        let (n, m) = (r.min(c), r.max(c));
        let oriented: Vec<f64> = if r <= c {
            d.clone()
        } else {
            transpose(&d, r, c)
        };
        let expected = hungarian_reference(&oriented, n, m);
        assert_eq!(a.total(MatrixView::row_major(&d, r, c).unwrap()), expected);
        assert_eq!(b.total(MatrixView::row_major(&s, r, c).unwrap()), expected);
    }
}

/// Tall and wide matrices of every shape up to 24 x 24 (DETR's Q x T with T from 0 to Q),
/// on both sides of the size ratio where the solver stops listing its free columns, in
/// every layout and precision, with one solver reused across all (its buffers change
/// size every time): optimal against the Hungarian reference, rows ascending, the original
/// rows of a tall matrix included. Integer costs in [0, 3) give many ties.
#[test]
fn tall_and_wide_match_reference() {
    let mut rng = Lcg(0x9e37_79b9_7f4a_7c15);
    let mut solver = Solver::<f64>::new();
    for q in 1..=24 {
        for t in 0..=q {
            for range in [3, 1000] {
                let d: Vec<f64> = (0..q * t).map(|_| f64::from(rng.below(range))).collect();
                // Column-major storage of the q x t matrix is the row-major t x q one.
                let expected = if t == 0 {
                    0.0
                } else {
                    hungarian_reference(&transpose(&d, q, t), t, q)
                };
                for (rows, cols, data) in [(q, t, d.clone()), (t, q, transpose(&d, q, t))] {
                    for layout in 0..3 {
                        for single in [false, true] {
                            let total = solve_as(&data, rows, cols, false, layout, single).unwrap();
                            assert_eq!(total, expected, "{rows} x {cols} layout {layout}");
                        }
                    }
                    let view = MatrixView::row_major(&data, rows, cols).unwrap();
                    let a = solver.solve(view, false).unwrap();
                    assert_valid(&a, rows, cols);
                    assert_eq!(a.total(view), expected, "reused solver, {rows} x {cols}");
                }
            }
        }
    }
}

/// Tall and wide matrices with forbidden pairs (`+inf`), feasible or not: the same optimum
/// as exhaustive search, or `Infeasible` exactly when it finds no complete assignment.
#[test]
fn tall_and_wide_with_forbidden_pairs_match_brute_force() {
    let mut rng = Lcg(0x0123_4567_89ab_cdef);
    for q in 1..=8 {
        for t in 0..=q.min(5) {
            for _ in 0..20 {
                let d: Vec<f64> = (0..q * t)
                    .map(|_| match rng.below(10) {
                        0..=3 => f64::INFINITY,
                        x => f64::from(x),
                    })
                    .collect();
                for (rows, cols, data) in [(q, t, d.clone()), (t, q, transpose(&d, q, t))] {
                    let want = brute_force(&data, rows, cols, false);
                    for layout in 0..3 {
                        let got = solve_as(&data, rows, cols, false, layout, false);
                        match want {
                            Some(best) => assert_eq!(got, Ok(best), "{rows} x {cols}"),
                            None => assert_eq!(got, Err(LsapError::Infeasible), "{rows} x {cols}"),
                        }
                    }
                }
            }
        }
    }
}

/// A deterministic LCG (Knuth's MMIX constants): random test matrices without extra
/// dependencies.
struct Lcg(u64);

impl Lcg {
    /// The next value in `[0, range)`.
    fn below(&mut self, range: u32) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 40) as u32 % range
    }
}

/// The row-major transpose of a row-major `rows x cols` matrix.
fn transpose(d: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    (0..rows * cols)
        .map(|k| d[(k % rows) * cols + k / rows])
        .collect()
}
