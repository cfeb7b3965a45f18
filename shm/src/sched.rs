//! The scheduling of the threads on a request's path: the bridge's runtime thread(s) and the
//! SIP server's processes that run the Diameter routes (issue 15 item 3).
//!
//! Why: a request needs the client, the bridge and a SIP-server worker to get a core in turn,
//! and on a loaded box the p99 follows their run-queue waits, not the rings (BENCHMARKS.md
//! "Session 10: latency under load"). Three ways to ask the kernel for shorter waits, applied to
//! the calling thread with `sched_setattr(2)`:
//!
//! * a shorter EEVDF slice (`sched_attr.sched_runtime` of a `SCHED_OTHER` thread, Linux 6.12+,
//!   kernel commits 857b158dc5e8 and 85e511df3cec "Allow shorter slices to wakeup-preempt"):
//!   the thread's virtual deadline comes earlier, so when it wakes up it preempts a thread with
//!   a longer slice sooner; its share of the CPU is unchanged (that is the weight, i.e. nice).
//!   The kernel clamps it to 0.1-100 ms ([`MIN_SLICE`], [`MAX_SLICE`]); it needs no privilege.
//!   Older kernels accept the call and ignore the value: [`Scheduling::apply`] reads it back
//!   and says so;
//! * a lower nice value (more weight): below the current nice it needs `CAP_SYS_NICE` or
//!   `RLIMIT_NICE`;
//! * `SCHED_FIFO` at a priority: every `SCHED_OTHER` thread waits for it; needs `CAP_SYS_NICE`
//!   or `RLIMIT_RTPRIO` (systemd's `LimitRTPRIO=`). The kernel's RT throttling (by default 95%
//!   of each second) is the only bound on a thread that spins.
//!
//! Threads and processes created afterwards inherit the setting (`clone(2)` copies the policy,
//! the nice value and, since 6.12, the slice), so applying it to a process's first thread
//! before it starts others covers them all.

use std::fmt;
use std::io;
use std::time::Duration;

/// The shortest slice the kernel takes (shorter is raised to it).
pub const MIN_SLICE: Duration = Duration::from_micros(100);
/// The longest slice the kernel takes (longer is lowered to it).
pub const MAX_SLICE: Duration = Duration::from_millis(100);

/// `SCHED_OTHER` (`SCHED_NORMAL` in the kernel): the default time-sharing policy.
pub const POLICY_OTHER: u32 = 0;
/// `SCHED_FIFO`: real-time, first in first out.
pub const POLICY_FIFO: u32 = 1;
/// `SCHED_RR`: real-time, round robin.
pub const POLICY_RR: u32 = 2;
/// `SCHED_DEADLINE`: real-time, by deadline.
pub const POLICY_DEADLINE: u32 = 6;
/// The nice values the kernel takes.
pub const NICE: std::ops::RangeInclusive<i32> = -20..=19;
/// The `SCHED_FIFO` priorities the kernel takes.
pub const FIFO_PRIORITY: std::ops::RangeInclusive<u32> = 1..=99;

/// `struct sched_attr` of `sched_setattr(2)` (the 56-byte version 1 layout with the
/// utilisation clamps; the kernel takes any size it knows).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
    sched_util_min: u32,
    sched_util_max: u32,
}

/// A thread's scheduling as the kernel reports it (`sched_getattr(2)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadScheduling {
    /// `SCHED_OTHER` is 0 ([`POLICY_OTHER`]), `SCHED_FIFO` 1 ([`POLICY_FIFO`]), ...
    pub policy: u32,
    /// The nice value (time-sharing policies).
    pub nice: i32,
    /// The real-time priority (0 for time-sharing policies).
    pub priority: u32,
    /// The EEVDF slice of a time-sharing thread (Linux 6.12+ reports it; older kernels 0).
    pub slice: Duration,
}

impl ThreadScheduling {
    /// Under a real-time policy (`SCHED_FIFO`, `SCHED_RR`, `SCHED_DEADLINE`): its
    /// `sched_yield` hands the core only to threads of its own priority.
    pub fn is_realtime(&self) -> bool {
        matches!(self.policy, POLICY_FIFO | POLICY_RR | POLICY_DEADLINE)
    }
}

impl fmt::Display for ThreadScheduling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.policy {
            POLICY_FIFO => write!(f, "SCHED_FIFO priority {}", self.priority),
            POLICY_OTHER => write!(
                f,
                "SCHED_OTHER nice {} slice {} us",
                self.nice,
                self.slice.as_micros()
            ),
            p => write!(
                f,
                "policy {p} nice {} priority {}",
                self.nice, self.priority
            ),
        }
    }
}

/// The calling thread's scheduling.
pub fn current_thread() -> io::Result<ThreadScheduling> {
    let a = get()?;
    Ok(ThreadScheduling {
        policy: a.sched_policy,
        nice: a.sched_nice,
        priority: a.sched_priority,
        slice: Duration::from_nanos(a.sched_runtime),
    })
}

fn get() -> io::Result<SchedAttr> {
    let mut a = SchedAttr::default();
    let size = std::mem::size_of::<SchedAttr>() as libc::c_uint;
    // SAFETY: `a` is a writable sched_attr of `size` bytes; pid 0 is the calling thread; the
    // kernel writes at most `size` bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut a as *mut SchedAttr,
            size,
            0,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(a)
}

fn set(a: &mut SchedAttr) -> io::Result<()> {
    a.size = std::mem::size_of::<SchedAttr>() as u32;
    // SAFETY: `a` is a valid sched_attr whose `size` is its own; pid 0 is the calling thread;
    // the kernel only reads it.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, a as *const SchedAttr, 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What an operator asks for the threads on the request path. The default asks nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scheduling {
    /// The EEVDF slice ([`MIN_SLICE`]..=[`MAX_SLICE`]); `None`: the kernel's (0.7 ms x (1 +
    /// log2 of the cores), 1.4 ms on 2 cores).
    pub slice: Option<Duration>,
    /// The nice value (-20..=19); `None`: unchanged.
    pub nice: Option<i32>,
    /// `SCHED_FIFO` at this priority (1..=99) instead of `SCHED_OTHER`; slice and nice then
    /// do not apply.
    pub fifo_priority: Option<u32>,
}

/// Why [`Scheduling::apply`] did not get what was asked, one line for the log. The caller
/// logs it and goes on with the thread's scheduling as it was.
#[derive(Debug)]
pub struct Refused {
    /// What was asked, as the operator wrote it (`slice 100 us`, `SCHED_FIFO priority 10`).
    pub asked: String,
    /// What the kernel said or did.
    pub reason: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "scheduling {}: {}", self.asked, self.reason)
    }
}

impl std::error::Error for Refused {}

impl Scheduling {
    /// Whether it asks for nothing.
    pub fn is_default(&self) -> bool {
        *self == Scheduling::default()
    }

    /// The values out of range, one message each (empty: valid).
    pub fn problems(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(s) = self.slice {
            if !(MIN_SLICE..=MAX_SLICE).contains(&s) {
                v.push(format!(
                    "slice of {} us: the kernel takes {}..={} us",
                    s.as_micros(),
                    MIN_SLICE.as_micros(),
                    MAX_SLICE.as_micros()
                ));
            }
        }
        if let Some(n) = self.nice {
            if !NICE.contains(&n) {
                v.push(format!("nice {n}: {}..={}", NICE.start(), NICE.end()));
            }
        }
        if let Some(p) = self.fifo_priority {
            if !FIFO_PRIORITY.contains(&p) {
                v.push(format!(
                    "SCHED_FIFO priority {p}: {}..={}",
                    FIFO_PRIORITY.start(),
                    FIFO_PRIORITY.end()
                ));
            }
        }
        v
    }

    fn asked(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = self.fifo_priority {
            parts.push(format!("SCHED_FIFO priority {p}"));
        } else {
            if let Some(s) = self.slice {
                parts.push(format!("slice {} us", s.as_micros()));
            }
            if let Some(n) = self.nice {
                parts.push(format!("nice {n}"));
            }
        }
        parts.join(", ")
    }

    /// Applies it to the calling thread (threads it creates later inherit it) and returns the
    /// scheduling the kernel then reports. Nothing asked: nothing done. Refused (out of range,
    /// `EPERM` without the privilege, a kernel that ignores the slice): the thread keeps its
    /// scheduling and the error says why in one line.
    pub fn apply(&self) -> Result<ThreadScheduling, Refused> {
        let refused = |reason: String| Refused {
            asked: self.asked(),
            reason,
        };
        if let Some(p) = self.problems().into_iter().next() {
            return Err(refused(p));
        }
        if self.is_default() {
            return current_thread().map_err(|e| refused(format!("sched_getattr: {e}")));
        }
        let mut a = get().map_err(|e| refused(format!("sched_getattr: {e}")))?;
        a.sched_flags = 0;
        if let Some(p) = self.fifo_priority {
            a.sched_policy = POLICY_FIFO;
            a.sched_priority = p;
            a.sched_nice = 0;
            a.sched_runtime = 0;
        } else {
            if a.sched_policy != POLICY_OTHER {
                a.sched_policy = POLICY_OTHER;
                a.sched_priority = 0;
                a.sched_runtime = 0;
            }
            if let Some(s) = self.slice {
                a.sched_runtime = u64::try_from(s.as_nanos()).unwrap_or(u64::MAX);
            }
            if let Some(n) = self.nice {
                a.sched_nice = n;
            }
        }
        if let Err(e) = set(&mut a) {
            let hint = match e.raw_os_error() {
                Some(libc::EPERM) if self.fifo_priority.is_some() => {
                    " (SCHED_FIFO needs CAP_SYS_NICE or RLIMIT_RTPRIO at least the priority, \
                     e.g. systemd LimitRTPRIO=)"
                }
                Some(libc::EPERM) => {
                    " (a lower nice needs CAP_SYS_NICE or RLIMIT_NICE, e.g. systemd Nice= or \
                     LimitNICE=)"
                }
                Some(libc::EINVAL) => " (a value this kernel does not take)",
                _ => "",
            };
            return Err(refused(format!("sched_setattr: {e}{hint}")));
        }
        let now = current_thread().map_err(|e| refused(format!("sched_getattr: {e}")))?;
        if let (Some(s), None) = (self.slice, self.fifo_priority) {
            if now.slice != s {
                return Err(refused(format!(
                    "the kernel reports a slice of {} us: it does not take a thread's slice \
                     (Linux before 6.12), nothing else changed",
                    now.slice.as_micros()
                )));
            }
        }
        Ok(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Each test changes only threads it starts itself, so the test harness's threads keep
    // their scheduling.
    fn in_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(f).join().unwrap()
    }

    fn kernel_takes_slices() -> bool {
        // sched_getattr reports the slice of a SCHED_OTHER thread since 6.12; before, 0.
        current_thread().is_ok_and(|s| s.slice > Duration::ZERO)
    }

    #[test]
    fn a_slice_is_applied_read_back_and_inherited_by_later_threads() {
        if !kernel_takes_slices() {
            eprintln!("skipped: this kernel does not report slices (before 6.12)");
            return;
        }
        let (applied, child, before) = in_thread(|| {
            let before = current_thread().unwrap();
            let s = Scheduling {
                slice: Some(Duration::from_micros(250)),
                ..Scheduling::default()
            };
            let applied = s.apply().unwrap();
            let child = std::thread::spawn(|| current_thread().unwrap())
                .join()
                .unwrap();
            (applied, child, before)
        });
        assert_eq!(applied.policy, POLICY_OTHER);
        assert_eq!(applied.slice, Duration::from_micros(250));
        assert_eq!(applied.nice, before.nice, "nice unchanged");
        assert_eq!(child, applied, "a thread started afterwards inherits it");
        // the harness's own thread is untouched
        assert_eq!(current_thread().unwrap(), before);
    }

    #[test]
    fn nothing_asked_changes_nothing() {
        let (before, after) = in_thread(|| {
            let before = current_thread().unwrap();
            (before, Scheduling::default().apply().unwrap())
        });
        assert_eq!(before, after);
    }

    #[test]
    fn out_of_range_values_are_refused_before_the_kernel_is_asked() {
        for (s, want) in [
            (
                Scheduling {
                    slice: Some(Duration::from_micros(50)),
                    ..Scheduling::default()
                },
                "100..=100000 us",
            ),
            (
                Scheduling {
                    slice: Some(Duration::from_millis(101)),
                    ..Scheduling::default()
                },
                "100..=100000 us",
            ),
            (
                Scheduling {
                    nice: Some(20),
                    ..Scheduling::default()
                },
                "-20..=19",
            ),
            (
                Scheduling {
                    fifo_priority: Some(0),
                    ..Scheduling::default()
                },
                "1..=99",
            ),
        ] {
            let e = in_thread(move || s.apply().unwrap_err());
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    #[test]
    fn a_higher_nice_needs_no_privilege_and_is_read_back() {
        // Raising nice is always allowed (lowering it again is not, without privilege: the
        // thread is thrown away).
        let got = in_thread(|| {
            Scheduling {
                nice: Some(5),
                ..Scheduling::default()
            }
            .apply()
            .unwrap()
        });
        assert_eq!((got.policy, got.nice), (POLICY_OTHER, 5));
    }

    #[test]
    fn fifo_is_applied_or_refused_with_the_privilege_it_needs() {
        let r = in_thread(|| {
            Scheduling {
                fifo_priority: Some(1),
                ..Scheduling::default()
            }
            .apply()
        });
        match r {
            Ok(got) => assert_eq!((got.policy, got.priority), (POLICY_FIFO, 1)),
            Err(e) => assert!(e.to_string().contains("RLIMIT_RTPRIO"), "{e}"),
        }
    }
}
