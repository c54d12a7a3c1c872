//! Where the service asks for it (`TELEMETRY_THREADS=idle`), the telemetry's own threads run at
//! Linux's `SCHED_IDLE`: a call's worker preempts them the moment it wakes.
//!
//! Exporting is bursty: a batch of 512 spans is encoded and written in a millisecond or so, and
//! where that shares a core with the service's workers, a call that arrives meanwhile waits for the
//! kernel to preempt the export, up to a time slice. At `SCHED_IDLE` it does not wait. The price:
//! the threads run only on CPU time that nothing else wants, so a core kept busy by calls (or by
//! anything else) starves them, their queues fill, and the SDK drops, and counts, what no longer
//! fits. Measured on 2 cores with the server alone on one (`h2load -c 4 -m 25`, as fast as it goes,
//! while other builds ran): 78 % of the spans dropped at `SCHED_IDLE`, none at the default. So it is
//! for services that run well below a full core, where the tail matters more than what a
//! saturated moment exports; the default is the service's own class.
//!
//! Every thread the telemetry starts runs there: `telemetry-io` (the exporters' network I/O), the
//! SDK's batch and reader threads and the stdout writer, all started from a thread that lowered
//! itself first (a thread inherits its creator's scheduling policy; the SDK has no hook of its own).

/// The export batch, in spans or log records, of telemetry threads at `SCHED_IDLE` where the
/// environment sets none: a batch of the SDK's 512 keeps the core for a millisecond or so, and
/// what a call waits for at the tail is the end of that burst. One call at a time on one core
/// (`h2load -c 1 -m 1`, 5 alternated rounds of 20k calls, the machine otherwise idle), the p99
/// full telemetry added over off was 356 µs at the default class, 225 µs at `SCHED_IDLE` with
/// batches of 512, 111 µs with 128, 118 µs with 64 and 129 µs with 32.
pub(crate) const IDLE_EXPORT_BATCH: usize = 128;

/// How the telemetry's threads are scheduled, from `TELEMETRY_THREADS`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum ThreadClass {
    /// The service's own class (the default).
    #[default]
    Normal,
    /// `SCHED_IDLE`: only when nothing else wants the CPU.
    Idle,
}

impl ThreadClass {
    /// `TELEMETRY_THREADS`: `idle`, or `normal` (also when unset); anything else is `normal` with
    /// a warning.
    pub(crate) fn parse(value: Option<&str>, warnings: &mut Vec<String>) -> Self {
        match value.map(str::trim).filter(|v| !v.is_empty()) {
            None => Self::Normal,
            Some(v) if v.eq_ignore_ascii_case("normal") => Self::Normal,
            Some(v) if v.eq_ignore_ascii_case("idle") => Self::Idle,
            Some(v) => {
                warnings.push(format!(
                    "TELEMETRY_THREADS={v:?} is neither \"idle\" nor \"normal\"; using normal"
                ));
                Self::Normal
            }
        }
    }

    /// The export batch size this class asks for, unless the environment's variable for it is
    /// set (`variable_set`): smaller batches at `SCHED_IDLE`, the SDK's otherwise.
    pub(crate) fn export_batch(self, variable_set: bool) -> Option<usize> {
        (self == Self::Idle && !variable_set).then_some(IDLE_EXPORT_BATCH)
    }

    /// Puts the calling thread, and so every thread it starts from now on, in this class. A
    /// failure is a warning's text: telemetry then runs at the service's class.
    pub(crate) fn enter(self) -> Result<(), String> {
        match self {
            Self::Normal => Ok(()),
            Self::Idle => set_idle(),
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn set_idle() -> Result<(), String> {
    use thread_priority::ThreadPriority;
    use thread_priority::unix::{
        NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
        thread_native_id,
    };
    set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    )
    .map_err(|e| {
        format!(
            "TELEMETRY_THREADS=idle: the telemetry's threads stay at the service's class ({e:?})"
        )
    })
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn set_idle() -> Result<(), String> {
    Err("TELEMETRY_THREADS=idle is Linux's SCHED_IDLE: the telemetry's threads stay at the service's class".to_owned())
}

#[cfg(test)]
mod tests {
    use super::ThreadClass;

    #[test]
    fn the_class_comes_from_telemetry_threads() {
        let mut warnings = Vec::new();
        assert_eq!(ThreadClass::parse(None, &mut warnings), ThreadClass::Normal);
        assert_eq!(
            ThreadClass::parse(Some(" IDLE "), &mut warnings),
            ThreadClass::Idle
        );
        assert_eq!(
            ThreadClass::parse(Some("normal"), &mut warnings),
            ThreadClass::Normal
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            ThreadClass::parse(Some("realtime"), &mut warnings),
            ThreadClass::Normal
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }

    #[test]
    fn idle_threads_export_smaller_batches_unless_the_environment_says() {
        assert_eq!(
            ThreadClass::Idle.export_batch(false),
            Some(super::IDLE_EXPORT_BATCH)
        );
        assert_eq!(ThreadClass::Idle.export_batch(true), None);
        assert_eq!(ThreadClass::Normal.export_batch(false), None);
    }

    /// A thread started by a thread at SCHED_IDLE is at SCHED_IDLE too: that is how the SDK's
    /// threads, which have no start hook, get there.
    #[cfg(target_os = "linux")]
    #[test]
    fn threads_started_from_an_idle_thread_are_idle() {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, thread_schedule_policy,
        };
        let policy = std::thread::spawn(|| {
            ThreadClass::Idle
                .enter()
                .expect("any thread may lower itself");
            std::thread::spawn(thread_schedule_policy)
                .join()
                .expect("the child thread")
        })
        .join()
        .expect("the lowered thread")
        .expect("its policy");
        assert_eq!(
            policy,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle)
        );
        let here = thread_schedule_policy().expect("this thread's policy");
        assert_eq!(
            here,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
            "only the telemetry's threads are lowered"
        );
    }
}
