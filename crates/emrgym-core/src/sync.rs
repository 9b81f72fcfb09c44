//! Locks without silent defaults. A lock is poisoned when a thread panicked while holding
//! it; the data inside is still there, and every EMRGym critical section leaves it
//! consistent (library code does not panic: clippy denies it). So a poisoned lock is
//! recovered, never read as "nothing": a poisoned trial counter must not give trial 0, and a
//! poisoned table must not look empty.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Lock a mutex, recovering it if poisoned.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read-lock an `RwLock`, recovering it if poisoned.
pub fn read<T: ?Sized>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write-lock an `RwLock`, recovering it if poisoned.
pub fn write<T: ?Sized>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_poisoned_lock_keeps_its_data() {
        let m = Arc::new(Mutex::new(41u32));
        let r = Arc::new(RwLock::new(vec![1, 2]));
        let (m2, r2) = (m.clone(), r.clone());
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            let _w = r2.write().unwrap();
            panic!("poison both");
        })
        .join();
        assert!(m.is_poisoned() && r.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 42);
        assert_eq!(*read(&r), vec![1, 2]);
        write(&r).push(3);
        assert_eq!(read(&r).len(), 3);
    }
}
