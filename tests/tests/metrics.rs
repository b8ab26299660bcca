//! `/metrics` of a real node: every family is described (`# HELP`), and build, process,
//! anti-entropy and handoff families are there.

use causeway_e2e::{Cluster, client, context_of};
use std::collections::BTreeSet;

#[test]
fn every_metric_family_has_help() {
    let c = Cluster::start("metrics", 2, 2, &[]);
    let http = client();
    for i in 0..20 {
        let r = http
            .put(format!("{}/v1/kv/m{i}", c.url(i % 2)))
            .body("v")
            .send()
            .expect("put");
        assert_eq!(r.status(), 204);
        let r = http
            .get(format!("{}/v1/kv/m{i}", c.url(0)))
            .header("x-causal-context", context_of(&r))
            .send()
            .expect("get");
        assert_eq!(r.status(), 200);
    }
    // The driver exports its gauges every second.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let text = http
        .get(format!("{}/metrics", c.url(0)))
        .send()
        .and_then(|r| r.text())
        .expect("metrics");
    let names = |prefix: &str| -> BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    };
    let (typed, helped) = (names("# TYPE "), names("# HELP "));
    let missing: Vec<_> = typed.difference(&helped).collect();
    assert!(
        missing.is_empty(),
        "families without HELP: {missing:?}\n{text}"
    );
    for family in [
        "causeway_build_info",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds_total",
        "causeway_aae_exchanges_total",
        "causeway_aae_keys_repaired_total",
        "causeway_aae_bytes_total",
        "causeway_handoff_pushing_streams",
        "causeway_handoff_keys_sent_total",
        "causeway_siblings_per_read",
        "causeway_http_requests_total",
        "causeway_replication_unacked",
    ] {
        assert!(typed.contains(family), "no {family} in\n{text}");
    }
    let version = format!(
        "causeway_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.contains(&version), "{text}");
}
