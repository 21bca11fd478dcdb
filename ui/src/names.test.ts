/**
 * The UI's primary-name rule against the cases the Rust rule wrote
 * (`names.cases.json`, kept current by warren-proto's tests).
 */
import { describe, expect, it } from 'vitest';
import cases from './names.cases.json';
import { agent, ws } from './fixtures';
import { agentRowName, primaryDnsName } from './names';

describe('primary DNS name', () => {
  it('agrees with Agent::primary_dns_name on every shared case', () => {
    expect(cases.length).toBeGreaterThan(5);
    for (const c of cases) {
      expect(primaryDnsName(c.dns_names), JSON.stringify(c.dns_names)).toBe(c.primary);
    }
  });

  it('is what an agent row shows, else the first tunnel address', () => {
    const api = ws('w1', 'api');
    expect(agentRowName(agent('a1', 'main', api, { dns_names: ['main.api.alice.warren', 'api.warren'] }))).toBe('api.warren');
    expect(agentRowName(agent('a2', 'gpu', api, { dns_names: [], addresses: ['100.64.0.7'] }))).toBe('100.64.0.7');
    expect(agentRowName(agent('a3', 'gpu', api, { dns_names: [] }))).toBeNull();
  });
});
