/**
 * The default timeout of every node that waits for the daemon, in seconds:
 * what a blank Timeout field means. Each form shows its default as the
 * field's placeholder, the same number in the same way (a test holds the
 * forms to this table). `msg.timeout` (ms) overrides a node's timeout; 0 in
 * the field or in msg.timeout means no timeout.
 *
 * Most local requests (keypair, index, PKI, cancel) answer in
 * milliseconds, but encrypt read/write run CTIDH-1024 in the daemon: 1-5 s
 * on an idle machine, over 60 s on a loaded one, so they get 120 s like the
 * client's request timeout. Of the mixnet round trips, a real Pigeonhole
 * read takes 5-20 s (more while the box does not exist yet), a copy command
 * up to a few minutes.
 */
export const DEFAULT_TIMEOUT_SECONDS: Readonly<Record<string, number>> = {
  'katzenpost-send': 30,
  'katzenpost-blocking-send': 30,
  'katzenpost-new-keypair': 30,
  'katzenpost-encrypt-write': 120,
  'katzenpost-encrypt-read': 120,
  'katzenpost-resend': 120,
  'katzenpost-cancel': 30,
  'katzenpost-tombstone': 300,
  'katzenpost-copy': 300,
  'katzenpost-index': 30,
  'katzenpost-pki': 30,
  'katzenpost-channel-send': 30,
};

/** The default timeout of a node type in ms (undefined for a type without one). */
export function defaultTimeoutMs(type: string): number | undefined {
  const s = DEFAULT_TIMEOUT_SECONDS[type];
  return s === undefined ? undefined : s * 1000;
}
