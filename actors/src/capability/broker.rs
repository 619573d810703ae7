//! The broker (see mod docs).
