/**
 * The wording of validation messages, shared by the runtime and the editor.
 *
 * The texts live once, in the katzenpost-daemon catalogue
 * (locales/en-US/katzenpost-daemon.json, "katzenpost-daemon.validation"):
 * the editor's validators translate them through that catalogue, and the
 * runtime reads the same file here, so a field the editor marks red and the
 * error the runtime raises for the same value say the same thing.
 *
 * Templates use Node-RED's `__name__` placeholders.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

type Catalogue = Record<string, unknown>;

function loadCatalogue(): Catalogue {
  // dist/nodes/lib -> dist/nodes/locales (the build copies locales/ there); src/nodes/lib -> <root>/locales.
  const candidates = [
    join(__dirname, '..', 'locales', 'en-US', 'katzenpost-daemon.json'),
    join(__dirname, '..', '..', '..', 'locales', 'en-US', 'katzenpost-daemon.json'),
  ];
  for (const file of candidates) {
    if (!existsSync(file)) continue;
    try {
      const json = JSON.parse(readFileSync(file, 'utf8')) as { 'katzenpost-daemon'?: Catalogue };
      const v = json['katzenpost-daemon'];
      if (v && typeof v === 'object') return v;
    } catch {
      // an unreadable catalogue: fall back to the keys themselves (never crash Node-RED)
    }
  }
  return {};
}

let catalogue: Catalogue | null = null;

/**
 * The text `key` of the katzenpost-daemon catalogue (e.g. "status.waiting")
 * with `__name__` placeholders filled in from `subs`. An unknown key gives
 * the key itself.
 */
export function catalogueText(key: string, subs: Record<string, string | number> = {}): string {
  catalogue ??= loadCatalogue();
  let node: unknown = catalogue;
  for (const part of key.split('.')) node = (node as Record<string, unknown> | undefined)?.[part];
  const template = typeof node === 'string' ? node : key;
  return template.replace(/__([A-Za-z0-9]+)__/g, (m, name: string) => (name in subs ? String(subs[name]) : m));
}

/** A validation text ("what.key", "got.characters", …), the wording the editor's validators use too. */
export function validationText(key: string, subs: Record<string, string | number> = {}): string {
  return catalogueText(`validation.${key}`, subs);
}
