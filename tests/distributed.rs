//! Distributed deployment end-to-end test (in progress).
