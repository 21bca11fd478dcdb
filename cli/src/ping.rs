//! `warren ping`: round-trip times to an agent through the tunnel.
//!
//! The helper sends each ICMP echo into the WireGuard tunnel itself and
//! times the reply, so this needs no raw socket and measures exactly the
//! path workspace traffic takes.

use crate::render::human_rtt;
use crate::session::APP_VERSION;
use anyhow::{bail, Result};
use std::path::Path;
use std::time::Duration;
use warren_ipc::{Client, ClientError};
use warren_proto::ipc::ErrorCode;

/// Pause between two echo requests.
const INTERVAL: Duration = Duration::from_secs(1);

/// Round-trip times seen so far, for the summary line.
#[derive(Debug, Default)]
pub struct Summary {
    pub sent: u32,
    pub rtts_us: Vec<u64>,
}

impl Summary {
    /// `--- api.warren: 4 sent, 3 received, 25% loss; rtt min/avg/max = …`
    pub fn line(&self, target: &str) -> String {
        let received = self.rtts_us.len() as u32;
        let loss = (self.sent.saturating_sub(received) * 100)
            .checked_div(self.sent)
            .unwrap_or(0);
        let mut line = format!(
            "--- {target}: {} sent, {received} received, {loss}% loss",
            self.sent
        );
        if let (Some(min), Some(max)) = (self.rtts_us.iter().min(), self.rtts_us.iter().max()) {
            let avg = self.rtts_us.iter().sum::<u64>() / u64::from(received);
            line.push_str(&format!(
                "; rtt min/avg/max = {}/{}/{}",
                human_rtt(*min),
                human_rtt(avg),
                human_rtt(*max)
            ));
        }
        line
    }
}

/// Sends `count` pings a second apart; fails if none came back.
pub async fn ping(socket: &Path, target: &str, count: u32, timeout_ms: Option<u64>) -> Result<()> {
    let mut client = Client::connect(socket, APP_VERSION).await?;
    let mut summary = Summary::default();
    for i in 0..count.max(1) {
        if i > 0 {
            tokio::time::sleep(INTERVAL).await;
        }
        summary.sent += 1;
        match client.ping(target, timeout_ms).await {
            Ok(report) => {
                let via = report
                    .endpoint
                    .map(|e| format!(" via {e}"))
                    .unwrap_or_default();
                println!(
                    "reply from {} ({}){via}: time={}",
                    report.name,
                    report.address,
                    human_rtt(report.rtt_us)
                );
                summary.rtts_us.push(report.rtt_us);
            }
            // A lost echo is part of what ping reports; keep going.
            Err(ClientError::Helper(e)) if e.code == ErrorCode::Unreachable => {
                println!("no reply: {}", e.message);
            }
            Err(e) => return Err(e.into()),
        }
    }
    println!("{}", summary.line(target));
    if summary.rtts_us.is_empty() {
        bail!("no replies from {target}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_loss_and_rtts() {
        let s = Summary {
            sent: 4,
            rtts_us: vec![400, 600, 500],
        };
        assert_eq!(
            s.line("api.warren"),
            "--- api.warren: 4 sent, 3 received, 25% loss; rtt min/avg/max = 0.40 ms/0.50 ms/0.60 ms"
        );
        let none = Summary {
            sent: 2,
            rtts_us: vec![],
        };
        assert_eq!(none.line("x"), "--- x: 2 sent, 0 received, 100% loss");
    }
}
