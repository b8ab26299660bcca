//! A tour of the client against a local cluster. Start one in another terminal:
//!
//! ```text
//! cargo run --release -- cluster          # 3 nodes on 127.0.0.1:8080..8082, data in causeway-data/
//! cargo run -p causeway-client --example tour
//! ```
//!
//! The example reads the admin token `causeway cluster` wrote (`causeway-data/admin.token`, or
//! `$CAUSEWAY_TOKEN`), trusts its CA (`causeway-data/tls/ca.pem`, or `$CAUSEWAY_CA_CERT`) for
//! `https://` nodes, and uses the nodes in `$CAUSEWAY_NODE` (comma separated; default: the three
//! nodes of `causeway cluster`).

use causeway_client::{BatchOp, BatchResult, Client, Error, ListOptions, Session, Versions};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let nodes = std::env::var("CAUSEWAY_NODE")
        .unwrap_or_else(|_| "127.0.0.1:8080,127.0.0.1:8081,127.0.0.1:8082".into());
    let token = std::env::var("CAUSEWAY_TOKEN")
        .or_else(|_| std::fs::read_to_string("causeway-data/admin.token"))
        .unwrap_or_default();
    let ca =
        std::env::var("CAUSEWAY_CA_CERT").unwrap_or_else(|_| "causeway-data/tls/ca.pem".into());
    let mut builder = Client::builder().nodes(nodes.split(',')).token(token);
    if std::path::Path::new(&ca).exists() {
        builder = builder.ca_file(&ca)?;
    }
    let client = builder.build()?;
    println!("nodes: {:?}", client.nodes());

    // A session reads its own writes through any node. Reading first makes the put replace
    // what an earlier run left (a put replaces the versions its session has seen).
    let session = Session::new(client.clone());
    session.get("tour/greeting").await?;
    session.put("tour/greeting", "hello").await?;
    let read = session.get("tour/greeting").await?;
    println!(
        "tour/greeting = {:?} (served by {:?})",
        read.versions, read.served_by
    );

    // Two sessions that never saw each other write the same key: siblings.
    let (alice, bob) = (Session::new(client.clone()), Session::new(client.clone()));
    alice.put("tour/cart", "milk").await?;
    bob.put("tour/cart", "eggs").await?;
    if let Versions::Siblings(values) = session.get("tour/cart").await?.versions {
        println!("tour/cart has {} siblings", values.len());
    }
    // Resolve them: the merge replaces every sibling the read saw.
    let merged = session
        .resolve("tour/cart", |values| {
            let mut items: Vec<String> = values
                .iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect();
            items.sort();
            items.join(",").into()
        })
        .await?;
    println!("tour/cart resolved to {merged:?}");

    // A batch: each operation has its own result.
    let ops: Vec<BatchOp> = (0..5)
        .map(|i| BatchOp::Put {
            key: format!("tour/item/{i}").into_bytes(),
            value: format!("value {i}").into(),
            w: None,
        })
        .collect();
    let written = session
        .batch(&ops)
        .await?
        .iter()
        .filter(|r| matches!(r, BatchResult::Written))
        .count();
    println!("batch: {written} of {} puts written", ops.len());

    // A listing, two keys per page, as an iterator.
    let mut listing = session.list(ListOptions {
        prefix: Some(b"tour/item/".to_vec()),
        limit: Some(2),
        ..ListOptions::default()
    });
    while let Some(entry) = listing.next().await? {
        println!("  {}", String::from_utf8_lossy(&entry.key));
    }

    // A write whose outcome is unknown is reported, never resent.
    match session.put("tour/greeting", "hello again").await {
        Err(Error::Indeterminate { node, cause }) => {
            println!("unknown outcome at {node} ({cause}): read the key before writing again")
        }
        other => other?,
    }
    Ok(())
}
