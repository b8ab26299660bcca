//! `causeway admin …`, in the spirit of `riak-admin` and `etcdctl`: the cluster's members,
//! shards, handoff and anti-entropy progress and suspected nodes (`status`, `handoff status`,
//! `aae status`), membership changes that wait, with a progress bar, until the cluster has
//! settled (`member add|remove`), and one anti-entropy exchange on demand (`aae pull`).
//!
//! Everything is read from the endpoints a node already serves (admin role): `GET /v1/cluster`
//! at `--node` for the view, what that node suspects and whether the cluster has settled, and
//! `GET /v1/cluster?scope=local` at each member for its own handoff state and anti-entropy
//! counters.

use super::conn::ClientOpts;
use anyhow::bail;
use causeway_client::{Client, Scope};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct AdminArgs {
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum AdminCommand {
    /// Members, shards, handoff and anti-entropy progress, suspected nodes
    Status(ReportArgs),
    /// Add a node to the cluster or remove one, then wait until the cluster has settled
    #[command(subcommand)]
    Member(MemberCommand),
    /// Anti-entropy: each member's exchanges, or one exchange now
    #[command(subcommand)]
    Aae(AaeCommand),
    /// Partition handoff: what each member still hands off or awaits
    #[command(subcommand)]
    Handoff(HandoffCommand),
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum MemberCommand {
    /// Admit a node started with --await-join (POST /v1/cluster/join)
    Add(MemberArgs),
    /// Install a view without the node (PUT /v1/cluster/view); it hands its data off first
    Remove(MemberArgs),
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum AaeCommand {
    /// Each member's anti-entropy exchanges and the partitions they have covered
    Status(ReportArgs),
    /// Run one anti-entropy exchange now (POST /v1/admin/aae/pull)
    Pull(PullArgs),
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum HandoffCommand {
    /// Partitions each member retains for new owners or awaits from old ones
    Status(ReportArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct ReportArgs {
    #[command(flatten)]
    pub conn: ClientOpts,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct MemberArgs {
    #[command(flatten)]
    pub conn: ClientOpts,
    /// The node's address as members know it (host:port)
    pub addr: String,
    /// Seconds to wait for the cluster to settle (0: return once the view is installed)
    #[arg(long, default_value_t = 120)]
    pub wait: u64,
}

#[derive(clap::Args, Debug, Clone)]
pub struct PullArgs {
    #[command(flatten)]
    pub conn: ClientOpts,
    /// The replica to exchange with (host:port, of the same shard as --at); or a node of a mesh
    /// upstream of --at's cluster, to pull every partition --at owns from that cluster
    #[arg(long)]
    pub peer: String,
    /// The member that runs the exchange (default: the first --node)
    #[arg(long)]
    pub at: Option<String>,
    /// Run exchanges until one completes (one exchange repairs at most the node's
    /// aae_max_keys keys' worth of differing segments)
    #[arg(long)]
    pub until_complete: bool,
    /// Print the node's JSON reply
    #[arg(long)]
    pub json: bool,
}

/// How long one admin request may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// How often a settle wait asks again.
const POLL: Duration = Duration::from_millis(250);

/// Runs one admin command.
pub async fn run(a: AdminArgs) -> anyhow::Result<()> {
    match a.command {
        AdminCommand::Status(r) => report(r, Section::All).await,
        AdminCommand::Aae(AaeCommand::Status(r)) => report(r, Section::Aae).await,
        AdminCommand::Handoff(HandoffCommand::Status(r)) => report(r, Section::Handoff).await,
        AdminCommand::Aae(AaeCommand::Pull(p)) => pull(p).await,
        AdminCommand::Member(MemberCommand::Add(m)) => {
            let client = m.conn.client(TIMEOUT, 3)?;
            let view = client.join(&m.addr).await?;
            eprintln!("{} admitted: epoch {}", m.addr, view["epoch"]);
            settle(&client, &view, m.wait, None).await
        }
        AdminCommand::Member(MemberCommand::Remove(m)) => {
            let client = m.conn.client(TIMEOUT, 3)?;
            let current = client.cluster(Scope::Local).await?;
            let nodes: Vec<String> = strings(&current["status"]["view"]["nodes"]);
            if !nodes.contains(&m.addr) {
                bail!("{} is not a member (members: {})", m.addr, nodes.join(", "));
            }
            let rest: Vec<String> = nodes.into_iter().filter(|n| *n != m.addr).collect();
            let view = client.change_view(&rest, None).await?;
            eprintln!("{} removed: epoch {}", m.addr, view["epoch"]);
            settle(&client, &view, m.wait, Some(&m.addr)).await
        }
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// Partitions on the move in a `GET /v1/cluster` reply: retained plus awaited, over every node
/// report, and the nodes that are not yet settled in `epoch`, with why.
fn moving(v: &Value, epoch: u64) -> (u64, Vec<String>) {
    let len = |x: &Value| x.as_array().map_or(0, Vec::len) as u64;
    let mut total = 0;
    let mut behind = Vec::new();
    for n in v["nodes"].as_array().into_iter().flatten() {
        let name = n["node"].as_str().unwrap_or("?");
        if n["reachable"] == false {
            behind.push(format!(
                "{name} unreachable ({})",
                n["error"].as_str().unwrap_or("")
            ));
            continue;
        }
        let h = &n["handoff"];
        let here = len(&h["retained"]) + len(&h["awaiting"]);
        total += here;
        if n["epoch"].as_u64().unwrap_or(0) < epoch {
            behind.push(format!("{name} in epoch {}", n["epoch"]));
        } else if n["settled"] != true {
            behind.push(format!("{name} moving {here} partitions"));
        }
    }
    (total, behind)
}

/// Partitions the removed node `addr` still holds for their new owners, when it answers (a dead
/// node is not waited for: its shard's other replicas hand its partitions on).
async fn leaving(client: &Client, addr: &str) -> Option<u64> {
    let l = client.node_status(addr).await.ok()?;
    let retained = l["status"]["handoff"]["retained"]
        .as_array()
        .map_or(0, Vec::len) as u64;
    (retained > 0).then_some(retained)
}

/// Waits (at most `wait` seconds) until the view `installed` has settled: every node reports
/// it (or a later one), none retains or awaits a partition, and the node `removed` (if any),
/// while it answers, has handed off what it held. A progress bar counts the partitions handed
/// off.
async fn settle(
    client: &Client,
    installed: &Value,
    wait: u64,
    removed: Option<&str>,
) -> anyhow::Result<()> {
    if wait == 0 {
        return Ok(());
    }
    let epoch = installed["epoch"].as_u64().unwrap_or(0);
    let pb = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template(
        "settling epoch {prefix} [{bar:30}] {pos}/{len} partitions handed off {msg} ({elapsed})",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_prefix(epoch.to_string());
    let deadline = Instant::now() + Duration::from_secs(wait);
    let mut most = 0;
    loop {
        let (mut now, mut behind) = match client.cluster(Scope::Cluster).await {
            Ok(v) => moving(&v, epoch),
            Err(e) => (most, vec![e.to_string()]),
        };
        if let Some(addr) = removed
            && let Some(held) = leaving(client, addr).await
        {
            now += held;
            behind.push(format!("{addr} (removed) handing off {held} partitions"));
        }
        most = most.max(now);
        pb.set_length(most);
        pb.set_position(most - now);
        pb.set_message(if behind.is_empty() {
            String::new()
        } else {
            format!("— waiting for {}", behind.join(", "))
        });
        if behind.is_empty() {
            pb.finish_and_clear();
            eprintln!("cluster settled in epoch {epoch}");
            return Ok(());
        }
        if Instant::now() >= deadline {
            pb.abandon();
            bail!(
                "the cluster has not settled within {wait} s (waiting for {}); the change \
                 stands and continues in the background: follow it with `causeway admin status`",
                behind.join(", ")
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `aae pull`: one exchange between `--at` and `--peer` (or, with `--until-complete`, as many
/// as it takes).
async fn pull(p: PullArgs) -> anyhow::Result<()> {
    let timeout = if p.until_complete {
        TIMEOUT * 10
    } else {
        TIMEOUT
    };
    let client = p.conn.client(timeout, 3)?;
    let reply = client
        .aae_pull(p.at.as_deref(), &p.peer, p.until_complete)
        .await?;
    if p.json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else {
        let done = if reply["complete"] == true {
            "complete"
        } else {
            "incomplete: run it again"
        };
        println!(
            "exchanged with {} ({} exchanges): {} keys repaired, {done}",
            reply["peer"].as_str().unwrap_or(&p.peer),
            reply["exchanges"],
            reply["keys_repaired"]
        );
    }
    Ok(())
}

/// Which part of the report a command prints.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    All,
    Aae,
    Handoff,
}

/// Gathers the report: the view from `--node` and each member's own state, asked concurrently
/// (an unreachable member is reported as such).
async fn gather(client: &Client) -> anyhow::Result<Value> {
    let view = client.cluster(Scope::Cluster).await?;
    let mut asks = tokio::task::JoinSet::new();
    let members = view["members"].as_array().cloned().unwrap_or_default();
    for (i, m) in members.iter().enumerate() {
        let (client, node) = (client.clone(), m["node"].as_str().unwrap_or("").to_owned());
        asks.spawn(async move { (i, client.node_status(&node).await) });
    }
    let mut locals: Vec<Option<Result<Value, String>>> = vec![None; members.len()];
    while let Some(Ok((i, r))) = asks.join_next().await {
        locals[i] = Some(r.map_err(|e| e.to_string()));
    }
    let out: Vec<Value> = members
        .iter()
        .zip(locals)
        .map(|(m, local)| member_json(m, local))
        .collect();
    let suspects: Vec<&Value> = members
        .iter()
        .filter(|m| m["suspect"] == true)
        .map(|m| &m["node"])
        .collect();
    Ok(json!({
        "asked": view["node"],
        "epoch": view["epoch"],
        "repl_factor": view["repl_factor"],
        "partitions": view["partitions"],
        "settled": view["cluster_settled"],
        "suspects": suspects,
        "shards": view["shards"].as_array().into_iter().flatten().map(|s| json!({
            "id": s["id"],
            "replicas": s["replicas"],
            "partitions": s["partitions"].as_array().map_or(0, Vec::len),
        })).collect::<Vec<_>>(),
        "members": out,
    }))
}

/// One member's line of the report: where it stands in `--node`'s view (and whether that node
/// suspects it), and its own handoff state and anti-entropy progress.
fn member_json(m: &Value, local: Option<Result<Value, String>>) -> Value {
    let mut out = json!({
        "node": m["node"],
        "shard": m["shard"],
        "suspect": m["suspect"],
    });
    match local {
        Some(Ok(l)) => {
            let s = &l["status"];
            let aae = &s["aae"];
            let owned = l["shards"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|sh| sh["id"] == m["shard"])
                .and_then(|sh| sh["partitions"].as_array().map(Vec::len))
                .unwrap_or(0);
            let covered = aae["partitions"].as_object().map_or(0, |p| {
                p.values()
                    .filter(|x| x["last_exchange_us"].as_u64().unwrap_or(0) > 0)
                    .count()
            });
            out["reachable"] = true.into();
            out["epoch"] = l["epoch"].clone();
            out["live_keys"] = s["live_keys"].clone();
            out["settled"] = l["settled"].clone();
            out["handoff"] = json!({
                "retained": s["handoff"]["retained"].as_array().map_or(0, Vec::len),
                "awaiting": s["handoff"]["awaiting"].as_array().map_or(0, Vec::len),
                "pushing": s["handoff"]["pushing"],
                "held_keys": s["handoff"]["held_keys"],
                "keys_sent": s["handoff"]["keys_sent"],
            });
            out["aae"] = json!({
                "exchanges": aae["exchanges"],
                "in_sync": aae["exchanges_in_sync"],
                "failed": aae["exchanges_failed"],
                "keys_repaired": aae["keys_repaired"],
                "partitions_covered": covered,
                "partitions_owned": owned,
            });
        }
        Some(Err(e)) => {
            out["reachable"] = false.into();
            out["error"] = e.into();
        }
        None => {
            out["reachable"] = false.into();
            out["error"] = "the status request failed".into();
        }
    }
    out
}

async fn report(r: ReportArgs, section: Section) -> anyhow::Result<()> {
    let client = r.conn.client(TIMEOUT, 3)?;
    let v = gather(&client).await?;
    if r.json {
        let v = match section {
            Section::All => v,
            Section::Aae | Section::Handoff => {
                let key = if section == Section::Aae {
                    "aae"
                } else {
                    "handoff"
                };
                json!({
                    "epoch": v["epoch"],
                    "settled": v["settled"],
                    "members": v["members"].as_array().into_iter().flatten().map(|m| json!({
                        "node": m["node"],
                        "reachable": m["reachable"],
                        key: m[key],
                    })).collect::<Vec<_>>(),
                })
            }
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", render(&v, section));
    }
    Ok(())
}

/// The report as text, one line per member.
fn render(v: &Value, section: Section) -> String {
    let mut s = String::new();
    let members = v["members"].as_array().cloned().unwrap_or_default();
    let settled = match v["settled"].as_bool() {
        Some(true) => "settled",
        Some(false) => "NOT settled",
        None => "settlement unknown",
    };
    let _ = writeln!(
        s,
        "cluster: epoch {}, {} members, {} shard(s) x {} replicas, {} partitions; {settled}",
        v["epoch"],
        members.len(),
        v["shards"].as_array().map_or(0, Vec::len),
        v["repl_factor"],
        v["partitions"]
    );
    if section == Section::All {
        for sh in v["shards"].as_array().into_iter().flatten() {
            let _ = writeln!(
                s,
                "  shard {}: {} ({} partitions)",
                sh["id"],
                strings(&sh["replicas"]).join(", "),
                sh["partitions"]
            );
        }
    }
    for m in &members {
        let node = m["node"].as_str().unwrap_or("?");
        if m["reachable"] != true {
            let _ = writeln!(
                s,
                "  {node}  UNREACHABLE: {}",
                m["error"].as_str().unwrap_or("")
            );
            continue;
        }
        let state = if m["suspect"] == true {
            "SUSPECT"
        } else {
            "up"
        };
        let h = &m["handoff"];
        let handoff = if m["settled"] == true {
            "handoff settled".to_owned()
        } else {
            format!(
                "handoff: {} retained, {} awaited, {} pushing",
                h["retained"], h["awaiting"], h["pushing"]
            )
        };
        let a = &m["aae"];
        let aae = format!(
            "aae: {} exchanges ({} in sync, {} failed), {} keys repaired, {}/{} partitions covered",
            a["exchanges"],
            a["in_sync"],
            a["failed"],
            a["keys_repaired"],
            a["partitions_covered"],
            a["partitions_owned"]
        );
        let line = match section {
            Section::All => format!(
                "{node}  shard {}  {state}  epoch {}  {} keys  {handoff}  {aae}",
                m["shard"], m["epoch"], m["live_keys"]
            ),
            Section::Aae => format!("{node}  {aae}"),
            Section::Handoff => format!("{node}  epoch {}  {handoff}", m["epoch"]),
        };
        let _ = writeln!(s, "  {line}");
    }
    if section == Section::All {
        let suspects = strings(&v["suspects"]);
        let _ = writeln!(
            s,
            "suspected: {}",
            if suspects.is_empty() {
                "none".to_owned()
            } else {
                suspects.join(", ")
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster_reply() -> Value {
        json!({
            "nodes": [
                {"node": "a:1", "reachable": true, "epoch": 4, "settled": true,
                 "handoff": {"retained": [], "awaiting": []}},
                {"node": "b:1", "reachable": true, "epoch": 4, "settled": false,
                 "handoff": {"retained": [1, 2], "awaiting": [3]}},
                {"node": "c:1", "reachable": true, "epoch": 3, "settled": true,
                 "handoff": {"retained": [], "awaiting": []}},
                {"node": "d:1", "reachable": false, "error": "refused"},
            ]
        })
    }

    #[test]
    fn a_settle_wait_counts_moving_partitions_and_names_who_is_behind() {
        let (n, behind) = moving(&cluster_reply(), 4);
        assert_eq!(n, 3);
        assert_eq!(
            behind,
            vec![
                "b:1 moving 3 partitions",
                "c:1 in epoch 3",
                "d:1 unreachable (refused)"
            ]
        );
        let settled = json!({"nodes": [{"node": "a:1", "reachable": true, "epoch": 5,
                                        "settled": true, "handoff": {}}]});
        assert_eq!(moving(&settled, 4), (0, vec![]));
    }

    #[test]
    fn the_report_names_members_suspects_handoff_and_aae() {
        let member = json!({"node": "a:1", "shard": 0, "suspect": true});
        let local = json!({
            "epoch": 4, "settled": false,
            "shards": [{"id": 0, "partitions": [0, 1, 2, 3]}],
            "status": {
                "live_keys": 10,
                "handoff": {"retained": [1], "awaiting": [], "pushing": 1},
                "aae": {"exchanges": 5, "exchanges_in_sync": 4, "exchanges_failed": 1,
                        "keys_repaired": 7,
                        "partitions": {"0": {"last_exchange_us": 9}, "1": {"last_exchange_us": 0}}},
            },
        });
        let m = member_json(&member, Some(Ok(local)));
        let down = member_json(
            &json!({"node": "b:1", "shard": 0, "suspect": false}),
            Some(Err("no answer".into())),
        );
        let v = json!({
            "epoch": 4, "repl_factor": 2, "partitions": 4, "settled": false,
            "suspects": ["a:1"], "shards": [{"id": 0, "replicas": ["a:1", "b:1"], "partitions": 4}],
            "members": [m, down],
        });
        let text = render(&v, Section::All);
        for want in [
            "cluster: epoch 4, 2 members, 1 shard(s) x 2 replicas, 4 partitions; NOT settled",
            "shard 0: a:1, b:1 (4 partitions)",
            "a:1  shard 0  SUSPECT  epoch 4  10 keys  handoff: 1 retained, 0 awaited, 1 pushing",
            "aae: 5 exchanges (4 in sync, 1 failed), 7 keys repaired, 1/4 partitions covered",
            "b:1  UNREACHABLE: no answer",
            "suspected: a:1",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(render(&v, Section::Aae).contains("a:1  aae: 5 exchanges"));
        assert!(render(&v, Section::Handoff).contains("a:1  epoch 4  handoff: 1 retained"));
    }
}
