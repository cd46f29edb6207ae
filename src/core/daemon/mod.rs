//! The daemon's parts that need no PHP: [`every`] keeps drift-free interval timers, [`cron`] turns
//! crontab lines into the next times they fire; [`plan`] decides what runs when (jobs, serial
//! lanes, parallel runs, the overlap rule, stopping, reloads); [`status`] is the table status
//! queries and metrics are made from, [`control`] the status socket that answers them; [`link`]
//! is the supervisor's line to its dispatcher, [`backoff`] its restart policy, [`pidfile`] the pid
//! file and its lock; [`counters`] keeps the application's own numbers for status and metrics.

pub mod backoff;
pub mod control;
pub mod counters;
pub mod cron;
pub mod every;
pub mod link;
pub mod pidfile;
pub mod plan;
pub mod status;
