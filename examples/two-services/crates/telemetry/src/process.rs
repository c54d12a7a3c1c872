//! Process metrics after the semantic conventions (`process.*`, release candidates since semconv
//! v1.43), read from `/proc/self` when the SDK collects: nothing runs on the request path.
//!
//! Linux only: elsewhere [`observe`] registers nothing and says so, and the service runs as before.

use opentelemetry::metrics::Meter;

/// Registers the process instruments with `meter`; `false` where the system has no `/proc`.
#[cfg(target_os = "linux")]
pub(crate) fn observe(meter: &Meter) -> bool {
    use opentelemetry::KeyValue;

    if std::fs::metadata("/proc/self/stat").is_err() {
        return false;
    }
    let user = [KeyValue::new("cpu.mode", "user")];
    let system = [KeyValue::new("cpu.mode", "system")];
    meter
        .f64_observable_counter("process.cpu.time")
        .with_description("Total CPU seconds of the process, by CPU mode")
        .with_unit("s")
        .with_callback(move |counter| {
            if let Some((user_s, system_s)) = linux::cpu_seconds() {
                counter.observe(user_s, &user);
                counter.observe(system_s, &system);
            }
        })
        .build();
    meter
        .i64_observable_up_down_counter("process.memory.usage")
        .with_description("The amount of physical memory in use (resident set size)")
        .with_unit("By")
        .with_callback(|counter| {
            if let Some(bytes) = linux::status_number("VmRSS:") {
                counter.observe(bytes * 1024, &[]);
            }
        })
        .build();
    meter
        .i64_observable_up_down_counter("process.memory.virtual")
        .with_description("The amount of committed virtual memory")
        .with_unit("By")
        .with_callback(|counter| {
            if let Some(bytes) = linux::status_number("VmSize:") {
                counter.observe(bytes * 1024, &[]);
            }
        })
        .build();
    meter
        .i64_observable_up_down_counter("process.thread.count")
        .with_description("Process threads count")
        .with_unit("{thread}")
        .with_callback(|counter| {
            if let Some(threads) = linux::status_number("Threads:") {
                counter.observe(threads, &[]);
            }
        })
        .build();
    meter
        .i64_observable_up_down_counter("process.unix.file_descriptor.count")
        .with_description("Number of unix file descriptors in use by the process")
        .with_unit("{file_descriptor}")
        .with_callback(|counter| {
            if let Some(fds) = linux::open_fds() {
                counter.observe(fds, &[]);
            }
        })
        .build();
    true
}

/// No `/proc` here: nothing to observe.
#[cfg(not(target_os = "linux"))]
pub(crate) fn observe(_meter: &Meter) -> bool {
    false
}

#[cfg(target_os = "linux")]
mod linux {
    /// Clock ticks per second of `/proc/<pid>/stat`'s times: the kernel's `USER_HZ`, 100 on every
    /// architecture Rust targets (reading `sysconf(_SC_CLK_TCK)` would need `unsafe`).
    const USER_HZ: f64 = 100.0;

    /// User and system CPU seconds, from fields 14 and 15 of `/proc/self/stat`.
    pub(super) fn cpu_seconds() -> Option<(f64, f64)> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) is in parentheses and may hold spaces: count after it.
        let mut fields = stat
            .get(stat.rfind(')')? + 1..)?
            .split_whitespace()
            .skip(11);
        let user: u64 = fields.next()?.parse().ok()?;
        let system: u64 = fields.next()?.parse().ok()?;
        Some((user as f64 / USER_HZ, system as f64 / USER_HZ))
    }

    /// The number on the line of `/proc/self/status` that starts with `key` (kB for `Vm*`).
    pub(super) fn status_number(key: &str) -> Option<i64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|line| line.starts_with(key))?;
        line[key.len()..].split_whitespace().next()?.parse().ok()
    }

    /// Open file descriptors: the entries of `/proc/self/fd`, less the one reading it.
    pub(super) fn open_fds() -> Option<i64> {
        let entries = std::fs::read_dir("/proc/self/fd").ok()?.count();
        Some(entries.saturating_sub(1) as i64)
    }
}
