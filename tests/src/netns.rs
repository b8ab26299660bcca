//! A private network for e2e tests: one Linux network namespace per node and one for the test's
//! clients, joined by veth pairs to a bridge that lives in a namespace of its own, with
//! addresses of [`SUBNET`] that exist only inside those namespaces. The host's own interfaces,
//! routes and firewall are never touched.
//!
//! Partitions are `nft` rules in the node namespaces that drop what arrives from the other side
//! (silently, as a cut cable does: connections time out, nothing is refused); the client
//! namespace reaches every node throughout. A thread enters the client namespace with
//! [`Fabric::enter_client`]; sockets it opens afterwards, and threads it spawns, live there.
//!
//! Everything is named `cwe2e<pid>-…` and removed on drop (also when the test panics); a run
//! killed before its drop leaves namespaces that the next [`Fabric::create`] removes, since their
//! process is gone.

use std::process::{Command, Stdio};

/// The private /24 of every fabric (each fabric has its own namespaces, so fabrics of parallel
/// tests do not clash).
pub const SUBNET: &str = "10.213.0";
/// Name prefix of every namespace a fabric creates.
const PREFIX: &str = "cwe2e";
/// The nft table that holds a fabric's partition rules.
const TABLE: &str = "causeway_partition";

/// A bridge, `nodes` node namespaces and a client namespace. Dropping it deletes them: kill the
/// processes running inside first (a namespace outlives its last `ip netns del` while a process
/// still runs in it).
pub struct Fabric {
    tag: String,
    nodes: usize,
    /// Namespaces created so far (deleted on drop).
    created: Vec<String>,
}

/// Runs `ip` (or `nft` inside a namespace) and returns its error output on failure.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(text.as_bytes())
            .map_err(|e| format!("{program}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args, None)
}

/// Deletes namespaces of fabrics whose test process no longer runs.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let pid = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

impl Fabric {
    /// Creates the namespaces and links of `nodes` nodes, or says why it cannot (no root or
    /// `CAP_NET_ADMIN`, no `ip`); a partial fabric is removed before the error returns.
    pub fn create(nodes: usize) -> Result<Fabric, String> {
        static SERIAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        assert!(nodes < 200, "one /24 holds the fabric");
        remove_stale();
        let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut f = Fabric {
            tag: format!("{PREFIX}{}-{serial}", std::process::id()),
            nodes,
            created: Vec::new(),
        };
        f.build()?;
        Ok(f)
    }

    fn build(&mut self) -> Result<(), String> {
        let bridge = self.ns("sw");
        self.add_ns(&bridge)?;
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &bridge, "link", "set", "br0", "up"])?;
        let members: Vec<(String, String)> = (0..self.nodes)
            .map(|i| (self.node_ns(i), self.node_ip(i)))
            .chain([(self.client_ns(), self.client_ip())])
            .collect();
        for (i, (ns, addr)) in members.iter().enumerate() {
            self.add_ns(ns)?;
            let port = format!("p{i}");
            ip(&[
                "-n", &bridge, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ])?;
            ip(&["-n", &bridge, "link", "set", &port, "master", "br0", "up"])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    fn ns(&self, what: &str) -> String {
        format!("{}-{what}", self.tag)
    }

    fn add_ns(&mut self, name: &str) -> Result<(), String> {
        ip(&["netns", "add", name])?;
        self.created.push(name.to_owned());
        Ok(())
    }

    /// The namespace node `i` runs in.
    pub fn node_ns(&self, i: usize) -> String {
        self.ns(&format!("n{i}"))
    }

    /// Node `i`'s address (inside the fabric only).
    pub fn node_ip(&self, i: usize) -> String {
        format!("{SUBNET}.{}", 10 + i)
    }

    fn client_ns(&self) -> String {
        self.ns("cl")
    }

    fn client_ip(&self) -> String {
        format!("{SUBNET}.250")
    }

    /// The command prefix that runs a program in node `i`'s namespace.
    pub fn wrapper(&self, i: usize) -> Vec<String> {
        ["ip", "netns", "exec", &self.node_ns(i)]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// Moves the calling thread into the client namespace: its later sockets (and threads it
    /// spawns) reach the nodes' addresses, and no longer the host's loopback.
    pub fn enter_client(&self) {
        use std::os::fd::AsRawFd;
        let path = format!("/run/netns/{}", self.client_ns());
        let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
        // SAFETY: setns only reads the descriptor, which is open for the whole call; it changes
        // the namespace of this thread alone.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "setns into {path}: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Cuts the nodes into `sides`: each node drops every packet from a node of another side
    /// (nodes in no side keep every link). Replaces the previous cut.
    pub fn partition(&self, sides: &[&[usize]]) {
        for (s, side) in sides.iter().enumerate() {
            let others: Vec<String> = sides
                .iter()
                .enumerate()
                .filter(|(o, _)| *o != s)
                .flat_map(|(_, nodes)| nodes.iter().map(|n| self.node_ip(*n)))
                .collect();
            for &n in *side {
                let rules = format!(
                    "add table inet {TABLE}\ndelete table inet {TABLE}\n\
                     table inet {TABLE} {{\n chain input {{\n  type filter hook input priority 0; policy accept;\n  ip saddr {{ {} }} drop\n }}\n}}\n",
                    others.join(", ")
                );
                self.nft(n, &rules);
            }
        }
    }

    /// Removes every cut.
    pub fn heal(&self) {
        for n in 0..self.nodes {
            self.nft(
                n,
                &format!("add table inet {TABLE}\ndelete table inet {TABLE}\n"),
            );
        }
    }

    fn nft(&self, node: usize, rules: &str) {
        let ns = self.node_ns(node);
        run("ip", &["netns", "exec", &ns, "nft", "-f", "-"], Some(rules))
            .unwrap_or_else(|e| panic!("setting the partition rules of {ns}: {e}"));
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("removing network namespace {ns}: {e}");
            }
        }
    }
}

/// Whether `nft` can be run (the partition rules need it).
pub fn have_nft() -> bool {
    Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
