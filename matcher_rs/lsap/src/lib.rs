//! Exact linear sum assignment for dense matrices.
