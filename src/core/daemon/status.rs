//! What a daemon is doing, as one table: the snapshot the dispatcher answers status queries with
//! (JSON for `bin/forklift status --json`, read back by the CLI to print the tree) and renders as
//! Prometheus metrics (`bin/forklift metrics`). Built from the plan and the runtime at the moment
//! of the query; nothing here waits.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::counters::Series;
use super::plan::{Placement, Plan, Run, DURATION_BUCKETS};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Status {
    pub name: String,
    /// "running", "stopping" (TERM: finishing running jobs) or "reloading" (handed over).
    pub state: String,
    pub supervisor: Option<i32>,
    pub dispatcher: i32,
    pub dispatcher_started: f64,
    /// Dispatchers the supervisor has started after the first (deaths and reloads).
    pub dispatcher_restarts: u64,
    pub dispatcher_rss: u64,
    pub lanes: Vec<LaneStatus>,
    /// Runs started and not ended, lanes' and parallel ones.
    pub running: Vec<RunStatus>,
    pub jobs: Vec<JobStatus>,
    pub pools: Vec<PoolStatus>,
    /// Interval-timer ticks and cron times that passed without a run (the loop was late).
    pub timer_overruns: u64,
    /// The application's counters and histograms (`Daemon::count()`, `Daemon::observe()`).
    #[serde(default)]
    pub counters: Vec<Series>,
    /// The leader lock (one dispatcher across hosts); null without one.
    #[serde(default)]
    pub leader: Option<LeaderStatus>,
    pub now: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct LeaderStatus {
    /// "leader" (the schedule runs here) or "standby".
    pub state: String,
    /// Who holds the lock, as the lock says ("host:pid"); null when unknown or free.
    pub holder: Option<String>,
    /// Since when this dispatcher leads or stands by (Unix time).
    pub since: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct LaneStatus {
    pub name: String,
    pub running: Option<String>,
    pub queued: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RunStatus {
    pub id: u64,
    pub job: String,
    /// The lane, or null for a parallel run.
    pub lane: Option<String>,
    pub pid: i32,
    pub trigger: String,
    /// What this run works on (`Daemon::start(label:)`), such as a message's class.
    #[serde(default)]
    pub label: Option<String>,
    pub scheduled: f64,
    pub started: f64,
    pub elapsed: f64,
    /// Resident memory now, bytes (0 when it could not be read).
    pub rss: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct JobStatus {
    pub name: String,
    pub lane: Option<String>,
    /// The cron line, "every N s", or null for a job only run when asked.
    pub schedule: Option<String>,
    pub next_run: Option<f64>,
    pub runs: u64,
    pub skipped: u64,
    pub missed: u64,
    pub outcomes: Vec<(String, u64)>,
    pub last_outcome: Option<String>,
    pub last_error: Option<String>,
    pub last_started: Option<f64>,
    pub last_duration: Option<f64>,
    pub last_success: Option<f64>,
    pub duration_buckets: Vec<u64>,
    pub duration_sum: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct PoolStatus {
    pub name: String,
    pub workers: u64,
    pub busy: u64,
    pub queued: u64,
    pub worker_restarts: u64,
    pub tasks_done: u64,
}

pub fn unix(t: DateTime<Utc>) -> f64 {
    t.timestamp_micros() as f64 / 1e6
}

/// Resident memory of a process, bytes (0 when gone or unreadable).
pub fn rss_of(pid: i32) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/statm")) else {
        return 0;
    };
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    pages * page
}

impl Status {
    /// The plan's part of the status: lanes, running runs, jobs. `schedule_of` names a job's
    /// schedule ("*/5 * * * *", "every 1.5 s").
    pub fn fill_from(&mut self, plan: &Plan, schedule_of: impl Fn(&str) -> Option<String>) {
        let clock = super::plan::Clock::now();
        let now = clock.wall;
        self.now = unix(now);
        self.timer_overruns = plan.overruns();
        let lane_of = |p: Placement| match p {
            Placement::Lane(l) => Some(plan.lane_name(l).to_string()),
            Placement::Parallel => None,
        };
        let run_status = |r: &Run| {
            let (started, mono) = r.started.expect("running");
            RunStatus {
                id: r.id.0,
                job: plan.job_def(r.job).name.clone(),
                lane: lane_of(r.placement),
                pid: r.pid.unwrap_or(0),
                trigger: r.trigger.name().to_string(),
                label: r.label.clone(),
                scheduled: unix(r.scheduled),
                started: unix(started),
                elapsed: mono.elapsed().as_secs_f64(),
                rss: r.pid.map(rss_of).unwrap_or(0),
            }
        };
        let mut running: Vec<RunStatus> = plan.running().map(run_status).collect();
        running.sort_by_key(|r| r.id);
        self.lanes = plan
            .lanes()
            .map(|(_, name, run, queued)| LaneStatus {
                name: name.to_string(),
                running: run
                    .and_then(|id| plan.run(id))
                    .map(|r| plan.job_def(r.job).name.clone()),
                queued,
            })
            .collect();
        self.running = running;
        self.jobs = plan
            .jobs()
            .map(|(id, def, s)| JobStatus {
                name: def.name.clone(),
                lane: lane_of(def.placement),
                schedule: schedule_of(&def.name),
                next_run: plan.next_run(super::plan::Target::Job(id), clock).map(unix),
                runs: s.runs,
                skipped: s.skipped,
                missed: s.missed,
                outcomes: s.outcomes.clone(),
                last_outcome: s.last_outcome.clone(),
                last_error: s.last_error.clone(),
                last_started: s.last_started.map(unix),
                last_duration: s.last_duration,
                last_success: s.last_success.map(unix),
                duration_buckets: s.duration_buckets.to_vec(),
                duration_sum: s.duration_sum,
            })
            .collect();
    }

    /// The status in the Prometheus text format (version 0.0.4).
    pub fn metrics(&self) -> String {
        let mut m = Metrics {
            out: String::new(),
            daemon: label(&self.name),
        };
        m.family(
            "forklift_job_runs_total",
            "counter",
            "Job runs that ended, by job and outcome.",
        );
        for j in &self.jobs {
            for (outcome, n) in &j.outcomes {
                m.sample(
                    "forklift_job_runs_total",
                    &[("job", &j.name), ("outcome", outcome)],
                    *n as f64,
                );
            }
        }
        m.family(
            "forklift_job_skipped_total",
            "counter",
            "Runs not started because the job's previous run was still queued or running.",
        );
        for j in &self.jobs {
            m.sample(
                "forklift_job_skipped_total",
                &[("job", &j.name)],
                j.skipped as f64,
            );
        }
        m.family(
            "forklift_job_duration_seconds",
            "histogram",
            "Wall-clock duration of ended job runs.",
        );
        for j in &self.jobs {
            let mut cumulative = 0;
            for (i, le) in DURATION_BUCKETS.iter().enumerate() {
                cumulative += j.duration_buckets.get(i).copied().unwrap_or(0);
                m.sample(
                    "forklift_job_duration_seconds_bucket",
                    &[("job", &j.name), ("le", &le.to_string())],
                    cumulative as f64,
                );
            }
            let count: u64 = j.duration_buckets.iter().sum();
            m.sample(
                "forklift_job_duration_seconds_bucket",
                &[("job", &j.name), ("le", "+Inf")],
                count as f64,
            );
            m.sample(
                "forklift_job_duration_seconds_sum",
                &[("job", &j.name)],
                j.duration_sum,
            );
            m.sample(
                "forklift_job_duration_seconds_count",
                &[("job", &j.name)],
                count as f64,
            );
        }
        m.family(
            "forklift_job_last_success_timestamp_seconds",
            "gauge",
            "When the job's last successful run ended (Unix time).",
        );
        for j in &self.jobs {
            if let Some(t) = j.last_success {
                m.sample(
                    "forklift_job_last_success_timestamp_seconds",
                    &[("job", &j.name)],
                    t,
                );
            }
        }
        m.family("forklift_jobs_running", "gauge", "Job runs running now.");
        m.sample("forklift_jobs_running", &[], self.running.len() as f64);
        m.family(
            "forklift_lane_queued",
            "gauge",
            "Runs waiting in a serial lane.",
        );
        for l in &self.lanes {
            m.sample(
                "forklift_lane_queued",
                &[("lane", &l.name)],
                l.queued as f64,
            );
        }
        m.family(
            "forklift_dispatcher_restarts_total",
            "counter",
            "Dispatchers started by the supervisor after the first (deaths and reloads).",
        );
        m.sample(
            "forklift_dispatcher_restarts_total",
            &[],
            self.dispatcher_restarts as f64,
        );
        m.family(
            "forklift_worker_restarts_total",
            "counter",
            "Pool workers replaced (died, recycled).",
        );
        for p in &self.pools {
            m.sample(
                "forklift_worker_restarts_total",
                &[("pool", &p.name)],
                p.worker_restarts as f64,
            );
        }
        m.family(
            "forklift_timer_overruns_total",
            "counter",
            "Timer ticks and cron times that passed without a run because the loop was late.",
        );
        m.sample(
            "forklift_timer_overruns_total",
            &[],
            self.timer_overruns as f64,
        );
        if let Some(l) = &self.leader {
            m.family(
                "forklift_leader",
                "gauge",
                "1 while this dispatcher holds the leader lock (the schedule runs here), 0 in standby.",
            );
            m.sample(
                "forklift_leader",
                &[],
                f64::from(u8::from(l.state == "leader")),
            );
        }
        self.app_metrics(&mut m);
        m.out
    }

    /// The application's counters (`forklift_NAME_total`) and histograms
    /// (`forklift_NAME_seconds`), one family per name.
    fn app_metrics(&self, m: &mut Metrics) {
        let mut last = None;
        for s in &self.counters {
            let labels: Vec<(&str, &str)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            if s.buckets.is_empty() {
                let name = format!("forklift_{}_total", s.name);
                if last.as_ref() != Some(&name) {
                    m.family(
                        &name,
                        "counter",
                        "Counted by the application (Daemon::count()).",
                    );
                    last = Some(name.clone());
                }
                m.sample(&name, &labels, s.count as f64);
                continue;
            }
            let name = format!("forklift_{}_seconds", s.name);
            if last.as_ref() != Some(&name) {
                m.family(
                    &name,
                    "histogram",
                    "Durations observed by the application (Daemon::observe()).",
                );
                last = Some(name.clone());
            }
            let mut cumulative = 0;
            for (i, le) in DURATION_BUCKETS.iter().enumerate() {
                cumulative += s.buckets.get(i).copied().unwrap_or(0);
                let le = le.to_string();
                let mut with = labels.clone();
                with.push(("le", &le));
                m.sample(&format!("{name}_bucket"), &with, cumulative as f64);
            }
            let mut with = labels.clone();
            with.push(("le", "+Inf"));
            m.sample(&format!("{name}_bucket"), &with, s.count as f64);
            m.sample(&format!("{name}_sum"), &labels, s.sum);
            m.sample(&format!("{name}_count"), &labels, s.count as f64);
        }
    }
}

struct Metrics {
    out: String,
    daemon: String,
}

impl Metrics {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.out += &format!("# HELP {name} {help}\n# TYPE {name} {kind}\n");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let mut l = format!("daemon=\"{}\"", self.daemon);
        for (k, v) in labels {
            l += &format!(",{k}=\"{}\"", label(v));
        }
        self.out += &format!("{name}{{{l}}} {value}\n");
    }
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_escape_labels_and_make_cumulative_buckets() {
        let mut s = Status {
            name: "shop".into(),
            ..Default::default()
        };
        let mut buckets = vec![0; DURATION_BUCKETS.len() + 1];
        buckets[0] = 2; // <= 0.01
        buckets[4] = 1; // <= 1.0
        buckets[DURATION_BUCKETS.len()] = 1; // > 3600
        s.jobs.push(JobStatus {
            name: "a \"quoted\"\\job\n".into(),
            outcomes: vec![("ok".into(), 3), ("fatal".into(), 1)],
            duration_buckets: buckets,
            duration_sum: 4000.5,
            last_success: Some(1.5e9),
            ..Default::default()
        });
        let m = s.metrics();
        assert!(m.contains(r#"job="a \"quoted\"\\job\n""#), "{m}");
        assert!(m.contains(r#"le="0.01"} 2"#), "{m}");
        assert!(m.contains(r#"le="1"} 3"#), "{m}");
        assert!(m.contains(r#"le="3600"} 3"#), "{m}");
        assert!(m.contains(r#"le="+Inf"} 4"#), "{m}");
        assert!(m.contains(r#"forklift_job_runs_total{daemon="shop",job="a \"quoted\"\\job\n",outcome="fatal"} 1"#), "{m}");
    }

    #[test]
    fn app_counters_and_histograms_become_families() {
        let mut c = crate::core::daemon::counters::Counters::default();
        let l = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        c.count("messages", l("class", "App\\A"), 2).unwrap();
        c.count("messages", l("class", "B"), 1).unwrap();
        c.observe("message", l("class", "B"), 0.3).unwrap();
        let s = Status {
            name: "w".into(),
            counters: c.series(),
            ..Default::default()
        };
        let m = s.metrics();
        assert_eq!(
            m.matches("# TYPE forklift_messages_total counter").count(),
            1,
            "{m}"
        );
        assert!(
            m.contains(r#"forklift_messages_total{daemon="w",class="App\\A"} 2"#),
            "{m}"
        );
        assert!(
            m.contains(r#"forklift_message_seconds_bucket{daemon="w",class="B",le="0.5"} 1"#),
            "{m}"
        );
        assert!(
            m.contains(r#"forklift_message_seconds_bucket{daemon="w",class="B",le="0.1"} 0"#),
            "{m}"
        );
        assert!(
            m.contains(r#"forklift_message_seconds_count{daemon="w",class="B"} 1"#),
            "{m}"
        );
    }
}
