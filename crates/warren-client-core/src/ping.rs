//! Which agent and address `warren ping TARGET` means: a tunnel address, a
//! DNS name, `workspace/agent`, an agent id or a unique agent name. Pure;
//! [`crate::ClientState::resolve_ping`] adds the session's checks.

use warren_proto::model::Agent;

/// The name people type and see for an agent: its primary DNS name (the
/// rule the CLI, the tray and the UI share), else the agent's name.
pub fn best_name(agent: &Agent) -> &str {
    agent.primary_dns_name().unwrap_or(&agent.name)
}

/// Finds the agent `target` names — a tunnel address, a DNS name
/// (case-insensitive, trailing dot allowed), `workspace/agent`, an agent id
/// or a unique agent name — and the address to ping (IPv4 first, unless the
/// target is an address).
pub fn resolve_target<'a>(
    agents: &[&'a Agent],
    target: &str,
) -> Result<(&'a Agent, std::net::IpAddr), String> {
    let target = target.trim();
    if target.is_empty() {
        return Err("no target given: name an agent, e.g. `warren ping main.myws.warren`".into());
    }
    if let Ok(ip) = target.parse::<std::net::IpAddr>() {
        return agents
            .iter()
            .find(|a| a.addresses.contains(&ip))
            .map(|a| (*a, ip))
            .ok_or_else(|| format!("no agent has the tunnel address {ip}; see `warren status`"));
    }
    let name = target.trim_end_matches('.').to_ascii_lowercase();
    let mut found: Vec<&Agent> = agents
        .iter()
        .copied()
        .filter(|a| a.dns_names.iter().any(|d| d.eq_ignore_ascii_case(&name)))
        .collect();
    if found.is_empty() {
        found = agents.iter().copied().filter(|a| a.id == target).collect();
    }
    if found.is_empty() {
        // `workspace/agent` is `agent.workspace.` at the front of a DNS name.
        let prefix = match name.split_once('/') {
            Some((ws, agent)) => format!("{agent}.{ws}."),
            None => String::new(),
        };
        found = agents
            .iter()
            .copied()
            .filter(|a| {
                if prefix.is_empty() {
                    a.name.eq_ignore_ascii_case(&name)
                } else {
                    a.dns_names
                        .iter()
                        .any(|d| d.to_ascii_lowercase().starts_with(&prefix))
                }
            })
            .collect();
    }
    match found.as_slice() {
        [] => Err(format!(
            "no agent called {target:?}; `warren status` lists them"
        )),
        [agent] => {
            let address = agent
                .addresses
                .iter()
                .find(|a| a.is_ipv4())
                .or_else(|| agent.addresses.first())
                .copied()
                .ok_or_else(|| format!("agent {} has no tunnel address yet", agent.name))?;
            Ok((agent, address))
        }
        many => {
            let mut names: Vec<&str> = many.iter().map(|a| best_name(a)).collect();
            names.sort_unstable();
            Err(format!(
                "{target:?} could mean any of {}; use the full name",
                names.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, name: &str, dns: &[&str], addrs: &[&str]) -> Agent {
        Agent {
            id: id.into(),
            name: name.into(),
            workspace_id: "w".into(),
            public_key: Some("k".into()),
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            endpoints: vec![],
            dns_names: dns.iter().map(|d| d.to_string()).collect(),
            online: true,
        }
    }

    #[test]
    fn ping_targets_resolve_by_address_name_and_path() {
        let a = agent(
            "id-1",
            "main",
            &["main.api.alice.warren", "api.warren"],
            &["fd00::5", "100.64.0.5"],
        );
        let b = agent("id-2", "main", &["main.web.alice.warren"], &["100.64.0.6"]);
        let c = agent("id-3", "db", &["db.web.alice.warren"], &["fd00::7"]);
        let all = [&a, &b, &c];
        let ok = |t: &str| {
            let (agent, addr) = resolve_target(&all, t).unwrap_or_else(|e| panic!("{t}: {e}"));
            (agent.id.clone(), addr.to_string())
        };
        assert_eq!(ok("api.warren"), ("id-1".into(), "100.64.0.5".into()));
        assert_eq!(
            ok("MAIN.API.Alice.warren."),
            ("id-1".into(), "100.64.0.5".into())
        );
        assert_eq!(ok("fd00::5"), ("id-1".into(), "fd00::5".into()));
        assert_eq!(ok("web/main"), ("id-2".into(), "100.64.0.6".into()));
        assert_eq!(ok("id-2"), ("id-2".into(), "100.64.0.6".into()));
        // Only an IPv6 address: that one.
        assert_eq!(ok("db"), ("id-3".into(), "fd00::7".into()));

        let err = resolve_target(&all, "main").unwrap_err();
        assert!(
            err.contains("api.warren") && err.contains("main.web.alice.warren"),
            "{err}"
        );
        assert!(resolve_target(&all, "nope")
            .unwrap_err()
            .contains("warren status"));
        assert!(resolve_target(&all, "100.64.9.9")
            .unwrap_err()
            .contains("100.64.9.9"));
        assert!(resolve_target(&all, "  ").is_err());
    }
}
