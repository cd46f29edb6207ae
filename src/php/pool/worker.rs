//! A pool worker's life, in the forked child: start hooks, `Ready`, then one task after another
//! until `Stop` or the parent is gone; it never returns.

use std::time::{Duration, Instant};

use ext_php_rs::types::{ZendCallable, Zval};
use ext_php_rs::zend::try_catch;

use crate::core::spawn::{ChildEnd, Receiver};
use crate::core::sys;
use crate::core::wire::Message;
use crate::php::child::{self, Ending};
use crate::php::pool::state::Setup;
use crate::php::{blackbox, hooks, values, zend};

/// How stale a busy worker's title may get while it runs tasks back to back.
const TITLE_EVERY: Duration = Duration::from_millis(10);

fn set_title(setup: &Setup, number: usize, what: &str) {
    zend::set_process_title(&format!("forklift: {} #{number} {what}", setup.name));
}

/// A worker's life: start hook, `Ready`, then one task after another until `Stop`.
pub(crate) fn worker_main(end: ChildEnd, setup: &Setup, number: usize) -> ! {
    let mut rx = Receiver::new(&end, setup.max_frame);
    child::become_child(end, setup.max_frame);
    set_title(setup, number, "starting");
    if let Some(limit) = &setup.memory_limit {
        if let Ok(f) = ZendCallable::try_from_name("ini_set") {
            let _ = f.try_call(vec![&"memory_limit", limit]);
        }
    }
    // The application's child fork hooks first (reconnect lazily), as in any forked child.
    match try_catch(hooks::run_child) {
        Ok(Ok(())) => {}
        failed => {
            let ending = match failed {
                Ok(_) => child::classify_failure(),
                _ => Ending::Fatal,
            };
            let (code, _) = child::report_guarded(ending, setup.max_frame);
            child::flush_output();
            child::leave(if code == 0 { 1 } else { code });
        }
    }
    if let Some(hook) = &setup.on_start {
        let n = number as i64;
        let mut nz = Zval::new();
        nz.set_long(n);
        let ending = child::call(hook, &[&nz], None);
        if !matches!(ending, Ending::Returned(_)) {
            let (code, _) = child::report_guarded(ending, setup.max_frame);
            child::flush_output();
            child::leave(if code == 0 { 1 } else { code });
        }
    }
    blackbox::send(Message::Ready);
    let (mut cpu_before, _) = sys::usage_self();
    let mut title_set = Instant::now();
    let mut was_idle = true;
    loop {
        // Under load the next task is already there: say "idle" only when we will wait.
        if !rx.has_pending() {
            set_title(setup, number, "idle");
            was_idle = true;
        }
        match rx.next() {
            Some(Message::Task { id, format, bytes }) => {
                // Back to back tasks update the title at most every TITLE_EVERY: it is a PHP call.
                if title_set.elapsed() >= TITLE_EVERY || was_idle {
                    set_title(setup, number, &format!("task {id}"));
                    title_set = Instant::now();
                }
                was_idle = false;
                blackbox::begin_task();
                zend::reset_peak_memory();
                let ending = match values::unserialize(format, &bytes) {
                    Ok(payload) => child::call(&setup.handler, &[&payload], setup.soft_timeout),
                    // exit() in the payload's __wakeup, memory exhausted: the task ends so.
                    Err(values::Unreadable::Unwinding) => child::classify_failure(),
                    Err(why) => {
                        let why = why.to_string();
                        child::send_channel_failure(format!("the task's payload: {why}"), None);
                        Ending::Internal(why)
                    }
                };
                child::leave_if_helper(&ending);
                let mut last = ending.is_final();
                // The task's last messages go in one write.
                blackbox::cork();
                let (code, bailed) = child::report_guarded(ending, setup.max_frame);
                blackbox::report_unsent();
                // After a fatal error PHP does not go on, and neither does a worker.
                last |= bailed | !child::flush_output();
                child::send_stats();
                if last {
                    blackbox::uncork();
                    child::leave(code);
                }
                let (cpu, rss) = sys::usage_self();
                let cpu_ns = cpu.saturating_sub(cpu_before).as_nanos() as u64;
                cpu_before = cpu;
                blackbox::send(Message::TaskEnd { id, cpu_ns, rss });
                blackbox::uncork();
            }
            // Stop, or the parent is gone.
            _ => {
                child::flush_output();
                child::leave(0)
            }
        }
    }
}
