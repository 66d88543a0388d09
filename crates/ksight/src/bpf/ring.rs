//! A BPF ring buffer read in batches: the records the producer had committed at one moment
//! are handed over, then the reader's position is published, then it sleeps.
//!
//! Written here rather than taken from libbpf (libbpf-rs's `RingBuffer`) or aya's `RingBuf`
//! because both publish the reader's position after every record, and libbpf's, once woken,
//! follows the producer until the buffer is empty. Under a packet flood, with the producer
//! on one CPU and the reader on another, that moves the position's cache line and the line
//! the producer is writing between the two CPUs for every record: bench/capture.sh measured
//! `ksight capture` at 541 to 1,207 ns of CPU per packet unpaced, against 247 to 273 for
//! tcpdump, whose TPACKET_V3 reader hands back whole blocks. Read in batches, the records
//! are ones the producer has finished with, and the position moves a few times per batch.
//!
//! The layout is the kernel's (kernel/bpf/ringbuf.c): one writable page holding the reader's
//! position, then a read-only page holding the producer's, then the data, mapped twice in a
//! row so a record that wraps around is contiguous. Each record starts with an 8-byte header:
//! its length, with a busy bit while it is being written and a discard bit.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use libbpf_rs::{MapCore, MapHandle};

// The kernel's uapi numbers, as libbpf-sys generates them.
const BUSY_BIT: u32 = libbpf_sys::BPF_RINGBUF_BUSY_BIT;
const DISCARD_BIT: u32 = libbpf_sys::BPF_RINGBUF_DISCARD_BIT;
const HEADER: usize = libbpf_sys::BPF_RINGBUF_HDR_SZ as usize;

pub struct BatchRing {
    /// The reader's position (its own page, writable).
    consumer: Mapping,
    /// The producer's position, then the data twice.
    producer: Mapping,
    page: usize,
    mask: usize,
    /// Edge-triggered: it wakes on the producer's wakeups only, never because records wait.
    epoll: OwnedFd,
    /// The position is published after this many bytes within a batch too, so a long batch
    /// gives the producer room as it goes.
    release_every: usize,
}

/// A shared mapping of the ring's map file, unmapped on drop.
struct Mapping {
    at: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(fd: &MapHandle, len: usize, offset: usize, prot: i32) -> Result<Mapping> {
        // SAFETY: a new shared mapping of a ring-buffer map's file at an address the kernel
        // picks; the kernel checks the length, offset and protection against the map.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_fd().as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if at == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mapping the ring buffer");
        }
        let at = NonNull::new(at.cast::<u8>()).context("mapping the ring buffer: null")?;
        Ok(Mapping { at, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what Mapping::new mapped; nothing borrows it any more
        // (records are lent only for the length of a callback).
        unsafe { libc::munmap(self.at.as_ptr().cast(), self.len) };
    }
}

impl BatchRing {
    pub fn new(map: &MapHandle) -> Result<BatchRing> {
        let page = crate::common::kernel::page_size() as usize;
        let size = map.max_entries() as usize;
        if !size.is_power_of_two() || size < page {
            bail!("ring buffer of {size} bytes: not a power of two of pages");
        }
        let consumer = Mapping::new(map, page, 0, libc::PROT_READ | libc::PROT_WRITE)?;
        let producer = Mapping::new(map, page + 2 * size, page, libc::PROT_READ)?;
        let epoll = epoll_on(map)?;
        Ok(BatchRing {
            consumer,
            producer,
            page,
            mask: size - 1,
            epoll,
            release_every: (size / 8).max(page),
        })
    }

    fn consumer_pos(&self) -> &AtomicUsize {
        // SAFETY: the first word of the reader's page, aligned (a page), valid while self
        // lives; the kernel only reads it, and only this reader writes it.
        unsafe { AtomicUsize::from_ptr(self.consumer.at.as_ptr().cast()) }
    }

    fn producer_pos(&self) -> &AtomicUsize {
        // SAFETY: the first word of the producer's page, aligned, valid while self lives;
        // the kernel writes it with release order.
        unsafe { AtomicUsize::from_ptr(self.producer.at.as_ptr().cast()) }
    }

    /// Waits up to `timeout` for the producer's wakeup; a signal ends the wait early.
    pub fn wait(&self, timeout: Duration) -> Result<()> {
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one event into a live local; the epoll fd is ours.
        let n = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), &mut event, 1, ms) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) {
                return Err(err).context("waiting for the ring buffer");
            }
        }
        Ok(())
    }

    /// Hands every record committed by now to `each`, oldest first.
    pub fn consume(&self, mut each: impl FnMut(&[u8])) {
        let mut pos = self.consumer_pos().load(Ordering::Relaxed);
        let end = self.producer_pos().load(Ordering::Acquire);
        let mut released = pos;
        while pos < end {
            let header = self.record_at(pos);
            // SAFETY: the record's header lies in the data mapping (masked offset, 8-byte
            // aligned as every record is); the kernel commits it with a release store.
            let len =
                unsafe { AtomicU32::from_ptr(header.cast_mut().cast()) }.load(Ordering::Acquire);
            if len & BUSY_BIT != 0 {
                break; // still being written: records after it wait for the next batch
            }
            let size = (len & !(BUSY_BIT | DISCARD_BIT)) as usize;
            if len & DISCARD_BIT == 0 {
                // SAFETY: the record's bytes follow its header in the data, which is mapped
                // twice in a row, so even a record that wraps is contiguous; the kernel
                // does not touch them until the position moves past them.
                let data = unsafe { std::slice::from_raw_parts(header.add(HEADER), size) };
                each(data);
            }
            pos += (size + HEADER).next_multiple_of(8);
            if pos - released >= self.release_every {
                self.consumer_pos().store(pos, Ordering::Release);
                released = pos;
            }
        }
        if pos != released {
            self.consumer_pos().store(pos, Ordering::Release);
        }
    }

    fn record_at(&self, pos: usize) -> *const u8 {
        // SAFETY: the data starts a page into the producer's mapping and spans mask + 1
        // bytes twice; a masked offset plus a record's length stays inside it.
        unsafe { self.producer.at.as_ptr().add(self.page + (pos & self.mask)) }
    }
}

fn epoll_on(map: &MapHandle) -> Result<OwnedFd> {
    // SAFETY: epoll_create1 has no preconditions.
    let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("epoll_create1");
    }
    // SAFETY: a new descriptor this function alone owns.
    let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut event = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLET) as u32,
        u64: 0,
    };
    let fd = map.as_fd().as_raw_fd();
    // SAFETY: both descriptors are open; the event is a live local.
    if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) } < 0 {
        return Err(std::io::Error::last_os_error()).context("epoll_ctl on the ring buffer");
    }
    Ok(epoll)
}

/// Waits up to `timeout` for a ring buffer's records, then handles every record there is.
/// Records submitted without a wakeup do not make epoll report the ring ready, so it
/// consumes after every wait; EINTR (a stop signal arriving) is an ordinary return, and
/// the caller checks for the stop.
pub fn poll_ring(ring: &libbpf_rs::RingBuffer<'_>, timeout: Duration, what: &str) -> Result<()> {
    let mut ret = ring.poll_raw(timeout);
    if ret >= 0 || ret == -libc::EINTR {
        ret = ring.consume_raw().min(0);
    }
    if ret < 0 && ret != -libc::EINTR {
        bail!(
            "reading {what}: {}",
            std::io::Error::from_raw_os_error(-ret)
        );
    }
    Ok(())
}
