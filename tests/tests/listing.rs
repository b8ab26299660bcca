//! Range listing as clients meet it: 10,000 keys (some with bytes URLs must escape) across three
//! shards, walked page by page with an ordinary HTTP library (which encodes `after` itself) and
//! with `causeway list`, each key seen exactly once; `prefix=` narrows a listing; a malformed
//! cursor is a 400.

use causeway_e2e::{Cluster, client, run_cli};
use serde_json::Value;
use std::collections::BTreeSet;

const KEYS: usize = 10_000;
const THREADS: usize = 8;

/// Mostly plain keys, and every seventh one with characters a URL must escape.
fn key_of(i: usize) -> String {
    if i.is_multiple_of(7) {
        format!("odd/{i:05} %2D+&=?é")
    } else {
        format!("key-{i:05}")
    }
}

fn path_escape(key: &str) -> String {
    key.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn load(c: &Cluster) {
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let url = c.url(t % c.addrs.len());
            s.spawn(move || {
                let http = client();
                for i in (t..KEYS).step_by(THREADS) {
                    let r = http
                        .put(format!("{url}/v1/kv/{}", path_escape(&key_of(i))))
                        .body(format!("v{i}"))
                        .send()
                        .expect("put");
                    assert_eq!(r.status(), 204, "put {}", key_of(i));
                }
            });
        }
    });
}

/// Walks every page with reqwest's own query encoding; panics on a key seen twice or on more
/// pages than the keys can fill.
fn walk_with_reqwest(url: &str, limit: usize, prefix: Option<&str>) -> Vec<String> {
    let http = client();
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    let most_pages = KEYS / limit + 2;
    for _ in 0..most_pages {
        let mut q: Vec<(&str, String)> = vec![("limit", limit.to_string())];
        if let Some(p) = prefix {
            q.push(("prefix", p.to_owned()));
        }
        if let Some(a) = &after {
            q.push(("after", a.clone()));
        }
        let r = http
            .get(format!("{url}/v1/kv"))
            .query(&q)
            .send()
            .expect("list");
        assert_eq!(r.status(), 200);
        let page: Value = r.json().expect("json");
        for e in page["entries"].as_array().expect("entries") {
            keys.push(e["key"].as_str().expect("key").to_owned());
        }
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => return keys,
        }
    }
    panic!(
        "no end after {most_pages} pages of {limit}: {} keys, {} distinct",
        keys.len(),
        keys.iter().collect::<BTreeSet<_>>().len()
    );
}

#[test]
fn ten_thousand_keys_walk_once_over_http_and_the_cli() {
    let c = Cluster::start("listing", 3, 1, &[]);
    load(&c);
    let mut want: Vec<String> = (0..KEYS).map(key_of).collect();
    want.sort();

    let listed = walk_with_reqwest(&c.url(1), 250, None);
    assert_eq!(listed.len(), KEYS, "every key once");
    assert_eq!(listed, want, "in key order");

    let odd = walk_with_reqwest(&c.url(2), 100, Some("odd/"));
    assert_eq!(odd.len(), KEYS.div_ceil(7), "prefix= lists only its keys");
    assert!(odd.iter().all(|k| k.starts_with("odd/")));

    let node = c.addrs[0].as_str();
    let all = run_cli(&["list", "--node", node, "--all", "--limit", "1000"], b"");
    assert!(
        all.status.success(),
        "{}",
        String::from_utf8_lossy(&all.stderr)
    );
    let lines: Vec<String> = String::from_utf8(all.stdout)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines, want, "`causeway list --all` prints every key once");

    // Page by page with the cursor `causeway list` prints for `--after`.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..KEYS / 1000 + 2 {
        let mut args = vec!["list", "--node", node, "--limit", "1000"];
        if let Some(a) = &after {
            args.extend(["--after", a.as_str()]);
        }
        let out = run_cli(&args, b"");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        paged.extend(
            String::from_utf8(out.stdout)
                .expect("utf-8")
                .lines()
                .map(str::to_owned),
        );
        let stderr = String::from_utf8(out.stderr).expect("utf-8");
        after = stderr
            .lines()
            .find_map(|l| l.strip_prefix("more keys: causeway list --after "))
            .map(|rest| rest.split_whitespace().next().expect("a cursor").to_owned());
        if after.is_none() {
            break;
        }
    }
    assert!(after.is_none(), "the CLI's pages never ended");
    assert_eq!(
        paged, want,
        "`causeway list --after` pages cover every key once"
    );

    let http = client();
    for bad in ["bench%252D0000000002", "YQ==", "!!", "a"] {
        let r = http
            .get(format!("{}/v1/kv?after={bad}", c.url(0)))
            .send()
            .expect("list");
        assert_eq!(r.status(), 400, "after={bad}");
        let j: Value = r.json().expect("json error");
        assert!(
            j["detail"].as_str().is_some_and(|d| d.contains("cursor")),
            "{j}"
        );
    }
}
