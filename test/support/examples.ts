/** The example flows shipped in examples/: where they are and their paths, for the node and real-network tests. */
import { readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';

export const EXAMPLES = path.resolve(__dirname, '..', '..', 'examples');

/** Every example flow's path under examples/, in sorted order. */
export function listExamples(): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir).sort()) {
      const p = path.join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (name.endsWith('.json')) out.push(path.relative(EXAMPLES, p));
    }
  };
  walk(EXAMPLES);
  return out;
}
