/**
 * Turning message and form values into what the client library needs.
 *
 * Every failure is an InvalidArgumentError whose message names the property
 * the flow author controls ("msg.writeCap", "credentials: write cap") and the
 * expected type or size, and never echoes the value (caps are secrets).
 * Node-RED's Catch node shows `msg.error.message`, so that text is what a
 * user reads.
 */
import { InvalidArgumentError } from '../../client/errors';
import type { Node, NodeAPI, NodeMessage } from '../types';
import { validationText } from './messages';

/** How a string may stand for bytes. Strings are refused unless a field says so. */
export type StringEncoding = 'utf8' | 'hex' | 'base64';

export interface BufferSpec {
  /** What the user calls the value, e.g. "msg.writeCap". */
  name: string;
  /** Exact length in bytes. */
  size?: number;
  /** Inclusive upper bound in bytes, with a short reason for the message. */
  max?: number;
  maxReason?: string;
  /** Refuse a zero-length value. */
  nonEmpty?: boolean;
  /** Accept strings in this encoding (utf8 for payloads; never for blobs by default). */
  strings?: StringEncoding | false;
}

/** A short, secret-free description of a value for error messages. */
export function describeValue(v: unknown): string {
  if (v === undefined) return 'undefined (missing)';
  if (v === null) return 'null';
  if (typeof v === 'string') return v.length === 0 ? 'an empty string' : 'a string';
  if (Buffer.isBuffer(v)) return `a Buffer of ${v.length} bytes`;
  if (v instanceof Uint8Array) return `a Uint8Array of ${v.length} bytes`;
  if (Array.isArray(v)) return `an array of ${v.length} items`;
  if (typeof v === 'number') return Number.isFinite(v) ? `the number ${v}` : `${v}`;
  if (typeof v === 'bigint') return 'a BigInt';
  if (typeof v === 'boolean') return `${v}`;
  if (typeof v === 'object') return 'an object';
  return `a ${typeof v}`;
}

/** What a value must be, in the limits of `spec` (its name aside). */
export type BufferLimits = Omit<BufferSpec, 'name'>;

function expectedText(spec: BufferLimits): string {
  let what: string;
  if (spec.size !== undefined) what = `a Buffer of ${spec.size} bytes`;
  else if (spec.nonEmpty) what = 'a non-empty Buffer';
  else what = 'a Buffer';
  if (spec.strings === 'utf8') what += ' or a string';
  else if (spec.strings === 'hex') what += ' or a hex string';
  else if (spec.strings === 'base64') what += ' or a base64 string';
  return what;
}

/** `{ type: 'Buffer', data: [...] }`: what JSON.stringify makes of a Buffer. */
function isJsonBuffer(v: unknown): v is { type: 'Buffer'; data: unknown[] } {
  return (
    typeof v === 'object' &&
    v !== null &&
    (v as { type?: unknown }).type === 'Buffer' &&
    Array.isArray((v as { data?: unknown }).data)
  );
}

const HEX_RE = /^(?:[0-9a-fA-F]{2})*$/;
const BASE64_RE = /^[A-Za-z0-9+/_-]*={0,2}$/;

function decodeString(s: string, enc: StringEncoding, name: string, spec: BufferLimits): Buffer {
  if (enc === 'utf8') return Buffer.from(s, 'utf8');
  const t = s.replace(/\s+/g, '');
  if (enc === 'hex') {
    if (!HEX_RE.test(t)) throw new InvalidArgumentError(name, expectedText(spec), 'a string that is not hex');
    return Buffer.from(t, 'hex');
  }
  if (!BASE64_RE.test(t)) throw new InvalidArgumentError(name, expectedText(spec), 'a string that is not base64');
  return Buffer.from(t, t.includes('-') || t.includes('_') ? 'base64url' : 'base64');
}

/**
 * Accepts a Buffer, a Uint8Array (viewed, not copied), the JSON form
 * `{type:'Buffer', data:[...]}`, and strings only where `spec.strings` says
 * how to read them. Never mutates or copies a Buffer it is given.
 */
export function toBuffer(value: unknown, spec: BufferSpec): Buffer {
  return readBuffer(value, spec.name, spec);
}

/**
 * toBuffer with the name apart from the limits, for the per-message path
 * (ctx.buffer): no spec object is copied to add the name (an object spread
 * there costs more than the conversion itself).
 */
export function readBuffer(value: unknown, name: string, spec: BufferLimits): Buffer {
  let buf: Buffer;
  if (Buffer.isBuffer(value)) buf = value;
  else if (value instanceof Uint8Array) buf = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  else if (value instanceof ArrayBuffer) buf = Buffer.from(value);
  else if (isJsonBuffer(value)) {
    const data = value.data;
    for (const b of data) {
      if (typeof b !== 'number' || !Number.isInteger(b) || b < 0 || b > 255) {
        throw new InvalidArgumentError(name, expectedText(spec), 'a {type:"Buffer"} object whose data is not bytes');
      }
    }
    buf = Buffer.from(data as number[]);
  } else if (typeof value === 'string' && spec.strings) {
    buf = decodeString(value, spec.strings, name, spec);
  } else {
    throw new InvalidArgumentError(name, expectedText(spec), describeValue(value));
  }
  if (spec.size !== undefined && buf.length !== spec.size) {
    throw new InvalidArgumentError(name, expectedText(spec), `${buf.length} bytes`);
  }
  if (spec.nonEmpty && buf.length === 0) {
    throw new InvalidArgumentError(name, expectedText(spec), 'an empty value');
  }
  if (spec.max !== undefined && buf.length > spec.max) {
    throw new InvalidArgumentError(
      name,
      `at most ${spec.max} bytes${spec.maxReason ? ` (${spec.maxReason})` : ''}`,
      `${buf.length} bytes`,
    );
  }
  return buf;
}

/** Like toBuffer, but undefined and null give null. */
export function optionalBuffer(value: unknown, spec: BufferSpec): Buffer | null {
  return value === undefined || value === null ? null : toBuffer(value, spec);
}

/**
 * A key pasted into an editor credential field: hex or base64, told apart by
 * length (the two encodings of any one blob size never have the same length).
 * The message names the field, never its content.
 */
export function decodeKeyText(text: string, name: string, size: number): Buffer {
  const t = text.replace(/\s+/g, '');
  const hexLen = size * 2;
  if (t.length === hexLen && HEX_RE.test(t)) return Buffer.from(t, 'hex');
  if (BASE64_RE.test(t)) {
    const b = Buffer.from(t, t.includes('-') || t.includes('_') ? 'base64url' : 'base64');
    if (b.length === size) return b;
  }
  throw new InvalidArgumentError(name, keyExpectation(size), validationText('got.characters', { count: t.length }));
}

/** "32 bytes as hex (64 characters) or base64 (44 characters)": what a key field takes (the editor says the same). */
export function keyExpectation(size: number): string {
  return validationText('what.key', { size, hex: size * 2, base64: Math.ceil(size / 3) * 4 });
}

/** Names the editor fields of credentials in messages. */
export function credentialName(nodeType: string, field: string): string {
  return `${nodeType} credentials: ${field.replace(/([A-Z])/g, ' $1').toLowerCase()}`;
}

// --------------------------------------------------------------- numbers

/** An integer in [min, max] from a number or a decimal string. */
export function toInteger(value: unknown, name: string, min: number, max: number): number {
  const what = validationText('what.integer', { min, max });
  let n: number;
  if (typeof value === 'number') n = value;
  else if (typeof value === 'string' && /^\s*-?\d+\s*$/.test(value)) n = Number(value);
  else if (typeof value === 'bigint') n = Number(value);
  else throw new InvalidArgumentError(name, what, describeFormValue(value));
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new InvalidArgumentError(name, what, describeFormValue(value));
  }
  return n;
}

/** Numbers and short texts typed into a form are not secrets: name them as typed. */
function describeFormValue(v: unknown): string {
  if (typeof v === 'string' && v.length > 0 && v.length <= 40) return validationText('got.value', { value: v });
  return describeValue(v);
}

/**
 * A timeout: `msg.timeout` in milliseconds wins over the node's field (in
 * seconds), which wins over `fallbackMs`. 0 means "no timeout" and gives
 * undefined; a blank field gives `fallbackMs`. A node field that is not a
 * number of seconds, 0 or more, throws an InvalidArgumentError naming
 * `fieldName` (the editor refuses the same values with the same words).
 */
export function resolveTimeoutMs(msg: NodeMessage, nodeSeconds: unknown, fallbackMs?: number, fieldName = 'timeout'): number | undefined {
  if (msg.timeout !== undefined && msg.timeout !== null && msg.timeout !== '') {
    const t = msg.timeout;
    const n = typeof t === 'string' && /^\s*\d+(\.\d+)?\s*$/.test(t) ? Number(t) : t;
    if (typeof n !== 'number' || !Number.isFinite(n) || n < 0) {
      throw new InvalidArgumentError('msg.timeout', 'a number of milliseconds (0 = no timeout)', describeValue(t));
    }
    return n === 0 ? undefined : n;
  }
  const s = readSeconds(nodeSeconds, fieldName);
  if (s !== undefined) return s === 0 ? undefined : s * 1000;
  return fallbackMs;
}

/** A form field in seconds; blank gives undefined, anything but a number of seconds >= 0 gives undefined too (lenient). */
export function parseSeconds(v: unknown): number | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  const n = typeof v === 'number' ? v : Number(String(v).trim());
  return Number.isFinite(n) && n >= 0 ? n : undefined;
}

/**
 * A form field in seconds, checked: blank gives undefined; otherwise a finite
 * number >= 0 (or > 0 with `positive`), else an InvalidArgumentError naming
 * the field in the words the editor uses.
 */
export function readSeconds(v: unknown, name: string, positive = false): number | undefined {
  if (v === undefined || v === null || (typeof v === 'string' && v.trim() === '')) return undefined;
  const n = typeof v === 'number' ? v : /^\s*\d+(\.\d+)?\s*$/.test(String(v)) ? Number(String(v).trim()) : Number.NaN;
  if (!Number.isFinite(n) || n < 0 || (positive && n === 0)) {
    throw new InvalidArgumentError(name, validationText(positive ? 'what.positiveSeconds' : 'what.seconds'), describeFormValue(v));
  }
  return n;
}

// ------------------------------------------------------------- TypedInput

/** TypedInput types whose empty value means "use the msg property instead". */
const LITERAL_TYPES = new Set(['str', 'num', 'bool', 'json', 'bin', '']);

/**
 * Evaluate a TypedInput (value + type) the way core nodes do, supporting
 * asynchronous context stores. A blank literal means "not set by the form".
 */
export function evaluateTypedInput(
  RED: NodeAPI,
  node: Node,
  msg: NodeMessage,
  value: unknown,
  type: unknown,
): Promise<unknown> {
  const t = typeof type === 'string' && type ? type : 'str';
  if (LITERAL_TYPES.has(t) && (value === undefined || value === null || value === '')) return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    try {
      RED.util.evaluateNodeProperty(value, t, node, msg, (err, result) => (err ? reject(err) : resolve(result)));
    } catch (e) {
      reject(e);
    }
  });
}

/**
 * The "node config wins" rule: the form's TypedInput when it is set,
 * otherwise `msg[msgProperty]`. Returns the value and the name to use in
 * error messages.
 */
export async function resolveSetting(
  RED: NodeAPI,
  node: Node,
  msg: NodeMessage,
  form: { value: unknown; type: unknown; label: string },
  msgProperty: string,
): Promise<{ value: unknown; name: string }> {
  const fromForm = await evaluateTypedInput(RED, node, msg, form.value, form.type);
  if (fromForm !== undefined) {
    const type = typeof form.type === 'string' && form.type ? form.type : 'str';
    const name = LITERAL_TYPES.has(type) ? form.label : `${type}.${String(form.value)}`;
    return { value: fromForm, name };
  }
  return { value: msg[msgProperty], name: `msg.${msgProperty}` };
}
