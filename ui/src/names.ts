/**
 * Which of an agent's names the UI shows and copies: the same rule as
 * `Agent::primary_dns_name` in `crates/warren-proto/src/model.rs` (the CLI
 * and the tray use that one), checked against the cases it writes to
 * `names.cases.json` (names.test.ts), so the two cannot drift.
 */
import type { Agent } from './bindings/Agent';

/**
 * The shortest DNS name, ties broken by byte order. Lengths and order are
 * those of UTF-8 bytes, as in Rust, not JavaScript's UTF-16 units.
 */
export function primaryDnsName(names: readonly string[]): string | null {
  let best: string | null = null;
  let bestLen = 0;
  for (const name of names) {
    const len = utf8Length(name);
    if (best === null || len < bestLen || (len === bestLen && compareCodePoints(name, best) < 0)) {
      best = name;
      bestLen = len;
    }
  }
  return best;
}

/** What an agent's row shows, copies and pings: its primary DNS name, else its first tunnel address. */
export function agentRowName(agent: Agent): string | null {
  return primaryDnsName(agent.dns_names) ?? agent.addresses[0] ?? null;
}

function utf8Length(s: string): number {
  let n = 0;
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    n += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
  }
  return n;
}

/** Code point order, which is UTF-8 byte order (plain `<` compares UTF-16 units). */
function compareCodePoints(a: string, b: string): number {
  const x = a[Symbol.iterator]();
  const y = b[Symbol.iterator]();
  for (;;) {
    const p = x.next();
    const q = y.next();
    if (p.done || q.done) return p.done && q.done ? 0 : p.done ? -1 : 1;
    const d = p.value.codePointAt(0)! - q.value.codePointAt(0)!;
    if (d !== 0) return d;
  }
}
