//! Process-wide settings the `msd` binary makes before it does anything else (the `unet_peer` bench, which
//! stands for it in the PyTorch comparison, makes them too).
//!
//! Both were first measured (the second in its earlier form, below) on a training step of the NCSN++ and
//! DDPM++ small configs (2 threads, batch 32, alternating runs on the idle 2-core development machine): CPU
//! time per step 2.5–3.2 s → 1.8–2.4 s, wall time 1.2–1.8 s → 1.1–1.4 s (`notes/network-speed.md`, third
//! round).
//!
//! - **Freed memory stays in the heap.** A training step allocates and frees the same large activations and
//!   gradients every time. glibc serves blocks above its (adaptive) mmap threshold with fresh `mmap`s and
//!   returns them with `munmap`, so every step faulted its pages in again (zeroed by the kernel, with TLB
//!   shootdowns across threads). Here blocks up to 32 MiB (glibc's ceiling for this setting) come from the
//!   heap and the heap is not trimmed, so the pages are reused. The peak RSS does not change: it is the
//!   peak of live memory either way; the RSS just does not drop between steps.
//! - **candle's worker pool parks at once.** candle runs its large element-wise ops (among them the
//!   `zeros_like` + `add` with which its backward pass accumulates every gradient) on its own pool of
//!   `CANDLE_NUM_THREADS − 1` workers beside the calling thread; by default each worker then spins for
//!   up to 25 000 pause instructions before it parks, on the same cores as the kernels' rayon threads
//!   (9 % of the samples of a training step were that spin). Here the spin limit is 0: the workers park
//!   right after each op and are woken for the next. Until 2026-12-03 msd set `CANDLE_NUM_THREADS=1`
//!   instead, which ran those ops on the calling thread alone while the other cores idled (the
//!   gradient accumulation was ~13 % of a small NCSN++ step). With the parked pool the calling thread's
//!   share of those `add`s per NCSN++ small step fell from ~140 to ~65 ms (the other half runs on the
//!   worker); on the 2-core Intel VM the wall time of a step moved by less than that VM's noise
//!   (`notes/network-speed.md`, eighth round). Values the user sets (`CANDLE_NUM_THREADS`,
//!   `CANDLE_BARRIER_POOL_SPIN_LIMIT`) are kept.

/// Applies both settings; call it first thing in `main`. `MSD_MALLOC=default` leaves glibc's allocator
/// settings alone (for comparing memory and speed).
pub fn configure() {
    if std::env::var("MSD_MALLOC").as_deref() != Ok("default") {
        keep_freed_memory();
    }
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // Sound at the start of `main`: this program has started no thread and read nothing yet; the only
        // other threads are OpenBLAS's workers, idle since it loaded, which do not read the environment.
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0");
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    const MMAP_THRESHOLD: libc::c_int = 32 << 20;
    const TRIM_THRESHOLD: libc::c_int = libc::c_int::MAX;
    // SAFETY: plain setters of glibc's allocator parameters; they return 0 on a rejected value, which
    // leaves glibc's defaults (harmless).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}
