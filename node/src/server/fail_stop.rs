//! Fail-stop on panic. A panic anywhere in the process — the driver thread, a storage call, an
//! HTTP handler task — means some invariant broke; carrying on would leave a zombie (the driver
//! gone, every request answering 503; or a handler's state half-updated). So the process exits
//! with status 101 after the default hook has printed the panic, and a supervisor restarts it;
//! recovery is the ordinary crash recovery of the node's storage.

/// Installs the panic hook: print as usual, log, exit with status 101. Call once, first thing.
pub fn install() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        tracing::error!("panic: {info}; stopping the process (fail-stop)");
        std::process::exit(101);
    }));
}
