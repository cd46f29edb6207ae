//! Fork hooks, like `pthread_atfork`: `prepare` runs in the parent before each fork (last registered
//! first), `parent` in the parent after it, `child` in the job child before the job. Applications use
//! them to close connections before forking and reopen them lazily on each side (docs/architecture.md, "A job's life").

use std::cell::RefCell;

use ext_php_rs::types::{ZendCallable, Zval};

struct Hooks {
    prepare: Option<Zval>,
    parent: Option<Zval>,
    child: Option<Zval>,
}

thread_local! {
    static HOOKS: RefCell<Vec<Hooks>> = const { RefCell::new(Vec::new()) };
}

pub fn register(prepare: Option<&Zval>, parent: Option<&Zval>, child: Option<&Zval>) {
    let hooks = Hooks {
        prepare: prepare.map(Zval::shallow_clone),
        parent: parent.map(Zval::shallow_clone),
        child: child.map(Zval::shallow_clone),
    };
    HOOKS.with(|h| h.borrow_mut().push(hooks));
}

/// Forgets every hook (at the end of a request: the callables belong to it).
pub fn clear() {
    HOOKS.with(|h| h.borrow_mut().clear());
}

/// Calls the chosen hook of each registration; stops at the first that throws (`Err`, with the
/// exception left pending for the caller).
fn run(pick: fn(&Hooks) -> Option<&Zval>, reverse: bool) -> Result<(), ()> {
    // Clone the list first: a hook may register further hooks.
    let list: Vec<Zval> = HOOKS.with(|h| {
        h.borrow()
            .iter()
            .filter_map(|x| pick(x).map(Zval::shallow_clone))
            .collect()
    });
    let order: Box<dyn Iterator<Item = &Zval>> = if reverse {
        Box::new(list.iter().rev())
    } else {
        Box::new(list.iter())
    };
    for hook in order {
        let callable = ZendCallable::new(hook).map_err(|_| ())?;
        callable.try_call(vec![]).map_err(|_| ())?;
    }
    Ok(())
}

pub fn run_prepare() -> Result<(), ()> {
    run(|h| h.prepare.as_ref(), true)
}
pub fn run_parent() -> Result<(), ()> {
    run(|h| h.parent.as_ref(), false)
}
pub fn run_child() -> Result<(), ()> {
    run(|h| h.child.as_ref(), false)
}
