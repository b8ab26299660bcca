//! Client sessions: each issues its planned operations one at a time through its entry node,
//! carrying its causal context, and records every outcome in the history.
//!
//! A session holds its context the way a real client does: as the token text the server hands
//! out (`causeway::core::token`), merged with `token::merge` and decoded for each request. So
//! every seed sends its contexts through the token codec, and a codec that dropped or mangled an
//! entry would surface as a causality violation (G1/G7), not pass unseen.

use super::*;
use causeway::core::token;

#[derive(Default)]
pub(super) struct Session {
    /// The session's causal context, as token text (empty: no context).
    pub(super) token: String,
    pub(super) next: usize,
    pub(super) next_probe: usize,
    pub(super) current: Option<u64>,
    pub(super) done: bool,
    /// Drops its context before its next request (its token named writes lost for good).
    pub(super) reset: bool,
}
impl Session {
    /// The context the session's token names, or why a server would refuse the token (only a
    /// token longer than the codec accepts: the session holds only tokens the codec made).
    fn context(&self) -> Result<VersionVector, token::TokenError> {
        token::decode(&self.token)
    }

    /// Joins a token received (or another session's) into the session's own, as a client does.
    /// A token the codec refuses (too long) cannot be joined: the session keeps its own, and its
    /// next request fails as the server would refuse it. A joined token stays within the codec's
    /// size bound for the lineages it names.
    fn join_token(&mut self, other: &str) {
        let Ok(joined) = token::merge([self.token.as_str(), other]) else {
            return;
        };
        self.token = joined;
        if let Ok(ctx) = self.context() {
            assert!(
                self.token.len() <= token::max_chars(ctx.len()),
                "a token naming {} lineages is {} characters long",
                ctx.len(),
                self.token.len()
            );
        }
    }
}

impl<A: FnMut(u64)> World<'_, A> {
    pub(super) fn session_next(&mut self, s: usize) {
        if self.sessions[s].current.is_some() || self.sessions[s].done {
            return;
        }
        let plan = &self.plan.sessions[s];
        match self.phase {
            Phase::Chaos if self.now < self.chaos_end && self.sessions[s].next < plan.ops.len() => {
                let op = plan.ops[self.sessions[s].next].clone();
                let value = format!("s{s}.{}", self.sessions[s].next);
                self.sessions[s].next += 1;
                self.issue(s, &op, value, false);
            }
            Phase::Probe if self.sessions[s].next_probe < plan.probe.len() => {
                let op = plan.probe[self.sessions[s].next_probe].clone();
                let value = format!("s{s}.p{}", self.sessions[s].next_probe);
                self.sessions[s].next_probe += 1;
                self.issue(s, &op, value, true);
            }
            Phase::Probe => {
                self.sessions[s].done = true;
                if self.sessions.iter().all(|x| x.done) {
                    self.phase = Phase::Done;
                    let quiesce = (self.scenario.phases.quiesce_s * 1e6) as u64;
                    self.schedule(self.now + quiesce, Event::Settled);
                }
            }
            _ => {}
        }
    }

    /// The node a session's operation planned for `planned` goes to: that node if it is a
    /// member (by its own view; a crashed member still counts), else the member that many places
    /// along, so spares serve clients once they have joined and decommissioned nodes stop.
    pub(super) fn entry(&self, planned: usize) -> usize {
        let ok = |i: usize| {
            let s = &self.slots[i];
            s.started && !s.dead && s.member
        };
        if ok(planned) {
            return planned;
        }
        let members: Vec<usize> = (0..self.slots.len()).filter(|&i| ok(i)).collect();
        if members.is_empty() {
            return planned;
        }
        members[planned % members.len()]
    }

    pub(super) fn issue(&mut self, s: usize, p: &PlannedOp, value: String, probe: bool) {
        let node = self.entry(p.node);
        if let Some(m) = p.merge_from.filter(|&m| m < self.sessions.len()) {
            let other = self.sessions[m].token.clone();
            self.sessions[s].join_token(&other);
        }
        let id = self.history.ops.len() as u64;
        let key = Bytes::from(key_name(p.key));
        let value = (p.kind == OpKind::Put).then(|| Bytes::from(value));
        let blind = p.blind && p.kind != OpKind::Get;
        let (context, refused) = if blind {
            (VersionVector::new(), None)
        } else {
            match self.sessions[s].context() {
                Ok(c) => (c, None),
                Err(e) => (VersionVector::new(), Some(e)),
            }
        };
        let op = match p.kind {
            OpKind::Get => Op::Get {
                key: key.clone(),
                context: context.clone(),
                r: self.r,
            },
            OpKind::Put | OpKind::Delete => Op::Put {
                key: key.clone(),
                value: value.clone(),
                content_type: None,
                context: context.clone(),
                w: self.w,
                ttl: p.ttl_s.filter(|_| p.kind == OpKind::Put),
            },
        };
        self.history.ops.push(OpRecord {
            id,
            session: s,
            node,
            kind: p.kind,
            key: key.clone(),
            value,
            context,
            invoked_us: self.now,
            completed_us: None,
            outcome: Outcome::Pending,
            probe,
            blind,
            replier_applied: None,
            servable: None,
            reset: std::mem::take(&mut self.sessions[s].reset),
        });
        self.sent.entry((node, key)).or_default().push(id);
        self.sessions[s].current = Some(id);
        self.note(TraceCode::Invoke, |w| {
            let op = &w.history.ops[id as usize];
            format!("invoke {op} ctx {:?}", op.context)
        });
        if let Some(e) = refused {
            // What the server answers a token it cannot decode: 400, nothing done.
            return self.complete(s, id, Outcome::Failed(format!("400: {e}")));
        }
        if self.slots[node].node.is_none() {
            let o = Outcome::Failed("connection refused: node down".into());
            return self.complete(s, id, o);
        }
        self.slots[node].pending.insert(id, s);
        self.watch(id, node, &op);
        let timeout = match self.scenario.workload.timeout_ms {
            Some(ms) => ms * 1000,
            None => (self.config.request_timeout + CLIENT_GRACE).as_micros() as u64,
        };
        self.schedule(
            self.now + timeout,
            Event::ClientTimeout { session: s, op: id },
        );
        let input = Input::Client(Request { id, op });
        if self.slots[node].paused {
            self.slots[node].held.push(input);
        } else {
            self.feed(node, input);
        }
    }

    /// Whether `ctx` names a write of a wiped incarnation that no running node has applied: a
    /// write lost for good, which no replica will ever cover.
    fn names_lost_writes(&self, ctx: &VersionVector) -> bool {
        ctx.iter().any(|(a, n)| {
            n > 0
                && a.hinted_partition().is_none()
                && self.wiped.contains(&(a.node(), a.incarnation()))
                && self
                    .slots
                    .iter()
                    .filter_map(|s| s.node.as_ref())
                    .all(|node| node.applied().get(a) < n)
        })
    }

    pub(super) fn complete(&mut self, s: usize, id: u64, outcome: Outcome) {
        let rec = &mut self.history.ops[id as usize];
        if rec.outcome != Outcome::Pending {
            return;
        }
        if let Outcome::Ok(Response::Read { context, .. } | Response::Written { context, .. }) =
            &outcome
        {
            self.sessions[s].join_token(&token::encode(context));
        }
        let unsatisfiable = matches!(&outcome, Outcome::Failed(e) | Outcome::Indeterminate(e)
            if *e == causeway::core::ReqError::Unsatisfiable.to_string());
        let lost = unsatisfiable
            && (self.sessions[s].context()).is_ok_and(|ctx| self.names_lost_writes(&ctx));
        let rec = &mut self.history.ops[id as usize];
        let retry = rec.probe && !matches!(outcome, Outcome::Ok(_)) && self.now < self.liveness_end;
        if retry {
            rec.probe = false;
            self.sessions[s].next_probe -= 1;
        }
        if retry && lost {
            // The documented way out (docs/guarantees.md): start again without the token.
            self.sessions[s].token.clear();
            self.sessions[s].reset = true;
        }
        rec.outcome = outcome;
        rec.completed_us = Some(self.now);
        self.watch_completed(id);
        self.note(TraceCode::Complete, |w| {
            format!("complete {}", w.history.ops[id as usize])
        });
        self.sessions[s].current = None;
        let sp = &self.plan.sessions[s];
        let next = match self.phase {
            Phase::Chaos => sp.ops.get(self.sessions[s].next),
            _ => sp.probe.get(self.sessions[s].next_probe),
        };
        let at = if retry {
            self.now + PROBE_RETRY.as_micros() as u64
        } else {
            next.map_or(self.now, |o| o.issue_at(self.now))
        };
        self.schedule(at, Event::Session(s));
    }
}
