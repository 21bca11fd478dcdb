//! [`Screen`]: what the coordinator says about workspaces and agents is
//! checked here before it reaches the directory, because the helper runs as
//! root and everything in the directory becomes a route, a WireGuard peer or
//! a DNS answer.
//!
//! An agent whose tunnel address lies outside the deployment's ranges, whose
//! key another agent already holds, or whose fields are malformed or oversized
//! is left out (turned into a deletion, so an agent that goes bad
//! disappears); unusable endpoints and names outside the suffix are cut while
//! the agent stays; agents beyond the policy's cap are left out. Each case
//! becomes a [`Notice`] a person sees in `warren status` and the app, and one
//! log line — never a silent drop.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use warren_proto::control::{UpdateKind, WorkspaceUpdate};
use warren_proto::ipc::{Notice, NoticeKind, MAX_NOTICES};
use warren_proto::limits::{
    check_endpoint, MAX_ADDRESSES, MAX_DNS_NAMES, MAX_ENDPOINTS, MAX_ID_BYTES,
    PUBLIC_KEY_BASE64_LEN,
};
use warren_proto::model::{Agent, AgentId, Workspace};
use warren_session::Directory;
use warren_tunnel::PeerKey;

use crate::confine::Confined;

/// Notices kept in memory; beyond this, only counted (a hostile coordinator
/// could otherwise grow them without bound).
const STORED_NOTICES: usize = 1000;
/// Distinct notices remembered as already logged.
const LOGGED_MEMORY: usize = 10_000;

/// What the screen enforces for the current deployment.
#[derive(Debug, Clone)]
pub struct Rules {
    pub confined: Confined,
    /// Loopback and link-local endpoints are fine (the coordinator is on
    /// loopback, so every peer shares this machine).
    pub allow_local_endpoints: bool,
    pub max_agents: usize,
}

/// Which agent holds which WireGuard key: one key, one agent.
#[derive(Debug, Default)]
struct KeyBook {
    owner: HashMap<PeerKey, AgentId>,
    key_of: HashMap<AgentId, PeerKey>,
}

impl KeyBook {
    /// Gives `key` to `agent`, or names the agent that already holds it.
    fn claim(&mut self, agent: &str, key: Option<PeerKey>) -> Result<(), AgentId> {
        if let Some(key) = key {
            if let Some(holder) = self.owner.get(&key) {
                if holder != agent {
                    return Err(holder.clone());
                }
            }
        }
        self.release(agent);
        if let Some(key) = key {
            self.owner.insert(key, agent.to_string());
            self.key_of.insert(agent.to_string(), key);
        }
        Ok(())
    }

    fn release(&mut self, agent: &str) {
        if let Some(old) = self.key_of.remove(agent) {
            self.owner.remove(&old);
        }
    }
}

/// The state of a snapshot being screened part by part: it replaces the
/// key ownership and the agent count when its last part is in.
#[derive(Debug, Default)]
struct SnapshotPass {
    keys: KeyBook,
    agents: HashSet<AgentId>,
    workspaces: usize,
    left_out: usize,
}

/// Which notice: about which agent (or the deployment), and what kind.
type NoticeKey = (Option<AgentId>, NoticeKind);

/// The notices of the running session, each kept once per agent and kind.
#[derive(Debug, Default)]
struct Notices {
    /// Each with the order it arrived in and its words.
    by_key: HashMap<NoticeKey, (u64, String)>,
    next: u64,
    /// Notices that did not fit in [`STORED_NOTICES`].
    overflow: u64,
    logged: HashSet<u64>,
    changed: bool,
}

impl Notices {
    fn set(&mut self, kind: NoticeKind, agent: Option<&str>, message: String) {
        let key = (agent.map(str::to_string), kind);
        if let Some((_, existing)) = self.by_key.get(&key) {
            if *existing == message {
                return;
            }
        } else if self.by_key.len() >= STORED_NOTICES {
            self.overflow += 1;
            self.log_once(&key, &message);
            return;
        }
        self.log_once(&key, &message);
        self.next += 1;
        self.by_key.insert(key, (self.next, message));
        self.changed = true;
    }

    fn log_once(&mut self, key: &NoticeKey, message: &str) {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (key, message).hash(&mut hasher);
        if self.logged.len() >= LOGGED_MEMORY {
            self.logged.clear();
        }
        if self.logged.insert(hasher.finish()) {
            tracing::warn!(agent = key.0.as_deref().unwrap_or(""), "{message}");
        }
    }

    fn clear(&mut self, kind: NoticeKind, agent: Option<&str>) {
        let key = (agent.map(str::to_string), kind);
        if self.by_key.remove(&key).is_some() {
            self.changed = true;
        }
    }

    fn clear_agent(&mut self, agent: &str) {
        self.clear(NoticeKind::AgentRefused, Some(agent));
        self.clear(NoticeKind::AgentTrimmed, Some(agent));
    }

    fn clear_all_agents(&mut self) {
        let before = self.by_key.len();
        self.by_key.retain(|(agent, _), _| agent.is_none());
        self.overflow = 0;
        self.changed |= before != self.by_key.len();
    }

    /// Newest last; when there are more than [`MAX_NOTICES`], the first says
    /// how many more there are.
    fn list(&self) -> Vec<Notice> {
        let mut all: Vec<(&NoticeKey, &(u64, String))> = self.by_key.iter().collect();
        all.sort_by_key(|(_, (seq, _))| *seq);
        let hidden = all.len().saturating_sub(MAX_NOTICES - 1) as u64 + self.overflow;
        let shown = if hidden > 0 {
            &all[all.len().saturating_sub(MAX_NOTICES - 1)..]
        } else {
            &all[..]
        };
        let mut out = Vec::with_capacity(shown.len() + 1);
        if hidden > 0 {
            out.push(Notice {
                kind: NoticeKind::Other,
                agent_id: None,
                message: format!(
                    "{hidden} more notices about this deployment's agents are in the helper's log"
                ),
            });
        }
        out.extend(shown.iter().map(|((agent, kind), (_, message))| Notice {
            kind: *kind,
            agent_id: agent.clone(),
            message: message.clone(),
        }));
        out
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Screen {
    rules: Option<Rules>,
    keys: KeyBook,
    pass: Option<SnapshotPass>,
    notices: Notices,
}

impl Screen {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new session (or a new sign-in): forget everything.
    pub fn reset(&mut self) {
        *self = Screen {
            notices: Notices {
                changed: !self.notices.by_key.is_empty(),
                logged: std::mem::take(&mut self.notices.logged),
                ..Notices::default()
            },
            ..Screen::default()
        };
    }

    /// The deployment was accepted: screen by its rules from now on.
    pub fn set_rules(&mut self, rules: Rules) {
        self.rules = Some(rules);
    }

    pub fn rules(&self) -> Option<&Rules> {
        self.rules.as_ref()
    }

    /// The current notices, newest last.
    pub fn notices(&self) -> Vec<Notice> {
        self.notices.list()
    }

    /// Whether the notices changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.notices.changed)
    }

    /// The update with everything the rules refuse taken out. Without rules
    /// (no deployment accepted yet) nothing passes.
    pub fn screen(
        &mut self,
        mut update: WorkspaceUpdate,
        directory: &Directory,
    ) -> WorkspaceUpdate {
        let Some(rules) = self.rules.clone() else {
            update.upserted_agents.clear();
            update.upserted_workspaces.clear();
            return update;
        };
        let snapshot = update.kind == UpdateKind::Snapshot;
        if snapshot && (!directory.is_staging() || self.pass.is_none()) {
            // A new full list: notices about agents are rebuilt from it.
            self.pass = Some(SnapshotPass::default());
            self.notices.clear_all_agents();
        }

        for id in &update.deleted_agents {
            self.keys.release(id);
            self.notices.clear_agent(id);
        }

        let workspaces = std::mem::take(&mut update.upserted_workspaces);
        for workspace in workspaces {
            match check_workspace(&workspace) {
                Ok(()) => {
                    let room = match &mut self.pass {
                        Some(pass) if snapshot => {
                            pass.workspaces += 1;
                            pass.workspaces <= rules.max_agents
                        }
                        _ => {
                            directory.has_workspace(&workspace.id)
                                || directory.workspace_count() < rules.max_agents
                        }
                    };
                    if room {
                        update.upserted_workspaces.push(workspace);
                    }
                }
                Err(problem) => {
                    self.notices.set(
                        NoticeKind::AgentRefused,
                        None,
                        format!("a workspace was left out: {problem}; ask the deployment's administrator"),
                    );
                    if !snapshot && directory.has_workspace(&workspace.id) {
                        update.deleted_workspaces.push(workspace.id);
                    }
                }
            }
        }

        let agents = std::mem::take(&mut update.upserted_agents);
        // The directory's size once this diff's own deletions are applied.
        let mut diff_count = if snapshot {
            0
        } else {
            let leaving = update
                .deleted_agents
                .iter()
                .filter(|id| directory.has_agent(id))
                .count();
            directory.agent_count().saturating_sub(leaving)
        };
        for agent in agents {
            let id = agent.id.clone();
            let known = !snapshot && directory.has_agent(&id);
            match self.check_agent(agent, &rules) {
                Err(problem) => {
                    self.notices.set(
                        NoticeKind::AgentRefused,
                        Some(&id),
                        format!("{problem}; ask the deployment's administrator"),
                    );
                    self.notices.clear(NoticeKind::AgentTrimmed, Some(&id));
                    self.keys.release(&id);
                    if known {
                        update.deleted_agents.push(id);
                    }
                }
                Ok((agent, key, trims)) => {
                    let book = match (&mut self.pass, snapshot) {
                        (Some(pass), true) => &mut pass.keys,
                        _ => &mut self.keys,
                    };
                    if let Err(holder) = book.claim(&id, key) {
                        self.notices.set(
                            NoticeKind::AgentRefused,
                            Some(&id),
                            format!(
                                "{} was left out: it announced the WireGuard key of agent {holder}, and a key belongs to one agent; ask the deployment's administrator",
                                describe(&agent)
                            ),
                        );
                        self.notices.clear(NoticeKind::AgentTrimmed, Some(&id));
                        if known {
                            update.deleted_agents.push(id);
                        }
                        continue;
                    }
                    let room = match (&mut self.pass, snapshot) {
                        (Some(pass), true) => {
                            pass.agents.contains(&id) || pass.agents.len() < rules.max_agents
                        }
                        _ => known || diff_count < rules.max_agents,
                    };
                    if !room {
                        let book = match (&mut self.pass, snapshot) {
                            (Some(pass), true) => {
                                pass.left_out += 1;
                                &mut pass.keys
                            }
                            _ => &mut self.keys,
                        };
                        book.release(&id);
                        self.notices.clear_agent(&id);
                        self.note_capped(&rules);
                        continue;
                    }
                    match (&mut self.pass, snapshot) {
                        (Some(pass), true) => {
                            pass.agents.insert(id.clone());
                        }
                        _ if !known => diff_count += 1,
                        _ => {}
                    }
                    self.notices.clear(NoticeKind::AgentRefused, Some(&id));
                    if trims.is_empty() {
                        self.notices.clear(NoticeKind::AgentTrimmed, Some(&id));
                    } else {
                        self.notices.set(
                            NoticeKind::AgentTrimmed,
                            Some(&id),
                            format!("{}: {}", describe(&agent), trims.join("; ")),
                        );
                    }
                    update.upserted_agents.push(agent);
                }
            }
        }

        if snapshot && !update.more {
            if let Some(pass) = self.pass.take() {
                self.keys = pass.keys;
                if pass.left_out == 0 {
                    self.notices.clear(NoticeKind::AgentsCapped, None);
                }
            }
        }
        update
    }

    /// One notice (and one log line) however many agents are left out:
    /// the words carry no running count, so a snapshot of 100,000 agents
    /// does not log 50,000 times.
    fn note_capped(&mut self, rules: &Rules) {
        self.notices.set(
            NoticeKind::AgentsCapped,
            None,
            format!(
                "the deployment has more agents than the {} this helper keeps; the rest are not shown or reachable — ask its administrator, or raise max_agents in this machine's Warren policy",
                rules.max_agents
            ),
        );
    }

    /// The agent as it may enter the directory (with its parsed key) and
    /// what was cut from it, or why it is left out.
    fn check_agent(
        &self,
        mut agent: Agent,
        rules: &Rules,
    ) -> Result<(Agent, Option<PeerKey>, Vec<String>), String> {
        if agent.id.is_empty() || agent.id.len() > MAX_ID_BYTES {
            return Err(format!(
                "an agent was left out: its id is empty or longer than {MAX_ID_BYTES} bytes"
            ));
        }
        let who = describe(&agent);
        if agent.name.len() > MAX_ID_BYTES || agent.workspace_id.len() > MAX_ID_BYTES {
            return Err(format!(
                "{who} was left out: its name or workspace id is longer than {MAX_ID_BYTES} bytes"
            ));
        }
        let key = match &agent.public_key {
            None => None,
            Some(text) => {
                let parsed = (text.trim().len() == PUBLIC_KEY_BASE64_LEN)
                    .then(|| warren_tunnel::parse_key(text))
                    .flatten();
                match parsed {
                    Some(key) => Some(key),
                    None => {
                        return Err(format!(
                            "{who} was left out: its WireGuard key is not 32 bytes of base64"
                        ))
                    }
                }
            }
        };
        if agent.addresses.len() > MAX_ADDRESSES {
            return Err(format!(
                "{who} was left out: it has {} tunnel addresses, more than the {MAX_ADDRESSES} allowed",
                agent.addresses.len()
            ));
        }
        if let Some(outside) = agent
            .addresses
            .iter()
            .find(|a| !rules.confined.contains(**a))
        {
            return Err(format!(
                "{who} was left out: its address {outside} is outside the deployment's ranges {}",
                rules.confined.ranges_text()
            ));
        }

        let mut trims = Vec::new();
        let announced = agent.endpoints.len();
        let mut first_problem = None;
        let mut refused = 0usize;
        let mut kept = Vec::with_capacity(announced.min(MAX_ENDPOINTS));
        for endpoint in agent.endpoints.drain(..) {
            if kept.len() == MAX_ENDPOINTS {
                break;
            }
            match check_endpoint(endpoint, rules.allow_local_endpoints) {
                Ok(()) if !kept.contains(&endpoint) => kept.push(endpoint),
                Ok(()) => {}
                Err(problem) => {
                    refused += 1;
                    first_problem.get_or_insert(format!("{endpoint} {problem}"));
                }
            }
        }
        agent.endpoints = kept;
        if let Some(problem) = first_problem {
            trims.push(format!("ignored {refused} of its endpoints ({problem})"));
        }
        if announced > MAX_ENDPOINTS {
            trims.push(format!(
                "it announced {announced} endpoints; Warren uses at most {MAX_ENDPOINTS}"
            ));
        }

        let mut names = Vec::new();
        let mut outside = Vec::new();
        for name in agent.dns_names.drain(..) {
            if rules.confined.owns_name(&name) && names.len() < MAX_DNS_NAMES {
                if !names.contains(&name) {
                    names.push(name);
                }
            } else if outside.len() < 3 {
                outside.push(shorten(&name, 64));
            }
        }
        agent.dns_names = names;
        if !outside.is_empty() {
            trims.push(format!(
                "ignored DNS names that are not under .{} or over the limit of {MAX_DNS_NAMES} ({})",
                rules.confined.suffix,
                outside.join(", ")
            ));
        }
        Ok((agent, key, trims))
    }
}

fn check_workspace(workspace: &Workspace) -> Result<(), String> {
    if workspace.id.is_empty()
        || workspace.id.len() > MAX_ID_BYTES
        || workspace.name.len() > MAX_ID_BYTES
        || workspace.owner.len() > MAX_ID_BYTES
    {
        return Err(format!(
            "workspace {} has an empty id or a field longer than {MAX_ID_BYTES} bytes",
            shorten(&workspace.name, 32)
        ));
    }
    Ok(())
}

/// "agent main (a-123)", safe to show whatever the coordinator put in it.
fn describe(agent: &Agent) -> String {
    format!(
        "agent {} ({})",
        shorten(&agent.name, 48),
        shorten(&agent.id, 48)
    )
}

/// At most `max` characters, control characters escaped.
fn shorten(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}
