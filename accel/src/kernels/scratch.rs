//! Reused temporary buffers (the im2col columns and the permuted outputs of the convolutions).
//!
//! Allocating them per call made the kernel fault in (and zero) fresh pages every time: `clear_page` and
//! page faults were 18 % of a profiled training step. A few buffers per thread are kept instead and handed
//! out again; a buffer is never shrunk, and only its part beyond what was ever used is zero-filled when it
//! grows. Callers overwrite (or zero) what they read, so the contents left by an earlier call never matter.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Buffers kept per thread and type; more are freed when returned.
const KEEP: usize = 4;

pub(crate) trait Pooled: Copy + Default + 'static {
    fn with_pool<R>(f: impl FnOnce(&mut Vec<Vec<Self>>) -> R) -> R;
}

thread_local! {
    static F32: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
    static F64: RefCell<Vec<Vec<f64>>> = const { RefCell::new(Vec::new()) };
}

impl Pooled for f32 {
    fn with_pool<R>(f: impl FnOnce(&mut Vec<Vec<Self>>) -> R) -> R {
        F32.with(|p| f(&mut p.borrow_mut()))
    }
}

impl Pooled for f64 {
    fn with_pool<R>(f: impl FnOnce(&mut Vec<Vec<Self>>) -> R) -> R {
        F64.with(|p| f(&mut p.borrow_mut()))
    }
}

/// `n` elements of a pooled buffer (contents unspecified: left over from an earlier use, or zero).
pub(crate) struct Scratch<T: Pooled> {
    buf: Vec<T>,
    n: usize,
}

impl<T: Pooled> Scratch<T> {
    pub(crate) fn new(n: usize) -> Self {
        // The smallest kept buffer that is large enough, else the largest one (grown).
        let mut buf = T::with_pool(|pool| {
            let fit = (0..pool.len())
                .filter(|&i| pool[i].len() >= n)
                .min_by_key(|&i| pool[i].len());
            let pick = fit.or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].len()));
            pick.map(|i| pool.swap_remove(i)).unwrap_or_default()
        });
        if buf.len() < n {
            buf.resize(n, T::default());
        }
        Self { buf, n }
    }
}

impl<T: Pooled> Deref for Scratch<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf[..self.n]
    }
}

impl<T: Pooled> DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[..self.n]
    }
}

impl<T: Pooled> Drop for Scratch<T> {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        T::with_pool(|pool| {
            pool.push(buf);
            if pool.len() > KEEP {
                // Free the smallest: the large ones are the expensive ones to fault in again.
                let i = (0..pool.len()).min_by_key(|&i| pool[i].len()).unwrap_or(0);
                pool.swap_remove(i);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_sized() {
        let p = {
            let mut a = Scratch::<f32>::new(1000);
            assert_eq!(a.len(), 1000);
            a[999] = 7.0;
            a.as_ptr()
        };
        // Same thread, smaller request: the same allocation comes back, with the requested length.
        let b = Scratch::<f32>::new(10);
        assert_eq!((b.len(), b.as_ptr()), (10, p));
        // Two live buffers are distinct.
        let c = Scratch::<f32>::new(10);
        assert_ne!(c.as_ptr(), b.as_ptr());
        drop((b, c));
        let big = Scratch::<f32>::new(5000);
        assert_eq!(big.len(), 5000);
    }
}
