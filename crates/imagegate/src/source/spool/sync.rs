//! The synchronisation the spool's threads use: the standard library's, or,
//! in the model test (`--features spool-model`, tests only), shuttle's, whose
//! scheduler runs the threads in random interleavings and whose
//! `wait_timeout` never times out, so that a missed wake-up shows as a
//! deadlock instead of being covered by a timeout.

#[cfg(not(all(test, feature = "spool-model")))]
pub(crate) use std::{
    sync::atomic::{AtomicBool, AtomicU64, AtomicUsize},
    sync::{Condvar, Mutex, MutexGuard},
    thread,
};

#[cfg(all(test, feature = "spool-model"))]
pub(crate) use shuttle::{
    sync::atomic::{AtomicBool, AtomicU64, AtomicUsize},
    sync::{Condvar, Mutex, MutexGuard},
    thread,
};
