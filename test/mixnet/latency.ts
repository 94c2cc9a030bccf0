/**
 * Wall-clock latency of the real network's blocking calls, per kind and
 * outcome, so each file can print medians at the end (the report the
 * real-network suite exists for). Instrumenting wraps the client's own
 * methods; nothing about their behaviour changes.
 */
import type { ResendParams, ThinClient } from '../../src';

type Resend = (params: ResendParams, opts?: unknown) => Promise<unknown>;

export class Latency {
  private readonly samples = new Map<string, number[]>();

  add(label: string, ms: number): void {
    const list = this.samples.get(label) ?? [];
    list.push(ms);
    this.samples.set(label, list);
  }

  /** Time every StartResending*, copy command and blocking send of `c`. */
  instrument<C extends ThinClient>(c: C): C {
    const time = async <T>(label: (err: unknown) => string, f: () => Promise<T>): Promise<T> => {
      const t0 = Date.now();
      try {
        const r = await f();
        this.add(label(null), Date.now() - t0);
        return r;
      } catch (e) {
        this.add(label(e), Date.now() - t0);
        throw e;
      }
    };
    const outcome = (e: unknown) => (e ? ` -> ${(e as Error).constructor.name}` : '');
    const wrapResend = (name: 'startResendingEncryptedMessage' | 'startResendingEncryptedMessageNoRetry' | 'startResendingEncryptedMessageReturnBoxExists', variant: string) => {
      const orig = (c[name] as Resend).bind(c);
      (c as unknown as Record<string, Resend>)[name] = (params, opts) =>
        time((e) => `${params?.readCap ? 'read' : 'write'}${variant}${outcome(e)}`, () => orig(params, opts));
    };
    wrapResend('startResendingEncryptedMessage', '');
    wrapResend('startResendingEncryptedMessageNoRetry', ' (no retry)');
    wrapResend('startResendingEncryptedMessageReturnBoxExists', ' (box exists)');
    const copy = c.startResendingCopyCommand.bind(c);
    c.startResendingCopyCommand = (writeCap, opts) => time((e) => `copy command${outcome(e)}`, () => copy(writeCap, opts));
    const send = c.blockingSendMessage.bind(c);
    c.blockingSendMessage = (payload, node, queue, opts) => time((e) => `echo round trip${outcome(e)}`, () => send(payload, node, queue, opts));
    return c;
  }

  /** "label: median X s (n, min-max)" lines, sorted by label. */
  report(title: string): string {
    const lines = [...this.samples.entries()]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([label, xs]) => {
        const s = [...xs].sort((a, b) => a - b);
        const mid = s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
        const sec = (ms: number) => (ms / 1000).toFixed(1);
        return `    ${label.padEnd(44)} median ${sec(mid).padStart(6)} s   n=${String(s.length).padEnd(3)} min ${sec(s[0])} s  max ${sec(s[s.length - 1])} s`;
      });
    return `\n  ${title} — latencies on the real network\n${lines.join('\n')}\n`;
  }
}
