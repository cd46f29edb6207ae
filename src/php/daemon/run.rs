//! `Forklift\JobRun`: one run of a daemon's job as the job events see it — which job, where, its
//! pid, when it was due and started, and at its end its `JobResult`.

use ext_php_rs::flags::ClassFlags;
use ext_php_rs::prelude::*;

use crate::php::result::JobResult;

#[php_class]
#[php(name = "Forklift\\JobRun")]
#[php(flags = ClassFlags::Final)]
pub struct JobRun {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) lane: Option<String>,
    pub(crate) pid: i32,
    pub(crate) trigger: String,
    pub(crate) label: Option<String>,
    pub(crate) schedule: Option<String>,
    pub(crate) scheduled_at: f64,
    pub(crate) started_at: f64,
    pub(crate) result: Option<JobResult>,
}

#[php_impl]
impl JobRun {
    /// The run's number in this dispatcher (from 0).
    pub fn id(&self) -> i64 {
        self.id as i64
    }

    /// The job's name.
    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// The serial lane it ran in, or null for a run in a child of its own (parallel).
    pub fn lane(&self) -> Option<String> {
        self.lane.clone()
    }

    /// The child's process id.
    pub fn pid(&self) -> i64 {
        self.pid as i64
    }

    /// What asked for it: "cron", "every", "asked" (queue()/start()) or "handed over" (a reload).
    pub fn trigger(&self) -> String {
        self.trigger.clone()
    }

    /// What the run worked on, as given to `queue()`/`start()` (such as a message's class), or null.
    pub fn label(&self) -> Option<String> {
        self.label.clone()
    }

    /// The job's schedule ("*/5 * * * *", "every 1.5 s"), or null.
    pub fn schedule(&self) -> Option<String> {
        self.schedule.clone()
    }

    /// When it was due (cron, every) or asked for, Unix time.
    pub fn scheduled_at(&self) -> f64 {
        self.scheduled_at
    }

    /// When its child started, Unix time.
    pub fn started_at(&self) -> f64 {
        self.started_at
    }

    /// How it ended; null in onJobStart, and for a run that never started (the fork failed, or the daemon stopped before its turn).
    pub fn result(&self) -> Option<JobResult> {
        self.result.as_ref().map(JobResult::share)
    }

    pub fn __debug_info(&self) -> PhpResult<std::collections::HashMap<String, String>> {
        let mut m = std::collections::HashMap::new();
        m.insert("id".into(), self.id.to_string());
        m.insert("name".into(), self.name.clone());
        m.insert(
            "lane".into(),
            self.lane.clone().unwrap_or_else(|| "(parallel)".into()),
        );
        m.insert("pid".into(), self.pid.to_string());
        m.insert("trigger".into(), self.trigger.clone());
        if let Some(l) = &self.label {
            m.insert("label".into(), l.clone());
        }
        if let Some(r) = &self.result {
            m.insert("outcome".into(), r.outcome().to_string());
        }
        Ok(m)
    }
}
