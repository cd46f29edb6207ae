//! The daemon's pure parts: when things are due. [`every`] keeps drift-free interval timers,
//! [`cron`] turns crontab lines into the next times they fire, in a time zone. Running what is due
//! (lanes, jobs, signals, status) builds on these and on the runtime's loop.

pub mod cron;
pub mod every;
