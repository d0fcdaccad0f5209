//! Shared set-up of the engine benchmarks.
