// A tiny table-driven checker for the parsed YAML documents: each kind is described by
// a schema (control/cluster/kinds.ts) and checked in one pass that reports the first
// problem with its field path. Hand-written rather than a JSON-schema library because the
// messages must name the field the way an operator reads the YAML (spec.rules[0].to[0]...).
import { isIP } from 'node:net';

export type Schema =
  | { t: 'string'; nonEmpty?: boolean }
  | { t: 'bool' }
  /** a number within min..max (inclusive); an integer unless fractions are allowed */
  | { t: 'number'; min: number; max: number; fractions?: boolean }
  | { t: 'enum'; values: readonly string[] }
  /** an IP address, or one of the listed words (a Service's clusterIP may be None) */
  | { t: 'ip'; also?: readonly string[] }
  | { t: 'cidr' }
  /** a number or a numeric string (Istio writes ports as strings), 1..65535 */
  | { t: 'port' }
  /** a port number or an IANA_SVC_NAME (Service targetPort) */
  | { t: 'portOrName' }
  /** string → string, Kubernetes labels and annotations */
  | { t: 'labels' }
  /** string → value, keys as the caller checks them (MeshPolicy header name → patterns) */
  | { t: 'map'; of: Schema }
  | { t: 'list'; of: Schema }
  | { t: 'object'; fields: Record<string, Field>; strict?: boolean; atLeastOne?: readonly string[] };

export interface Field {
  s: Schema;
  required?: boolean;
}

export interface Issue {
  path: string;
  reason: string;
}

// shorthands that keep the kind tables one line per field
export const str: Schema = { t: 'string' };
export const name: Schema = { t: 'string', nonEmpty: true };
export const bool: Schema = { t: 'bool' };
export const int = (min: number, max: number): Schema => ({ t: 'number', min, max });
export const fraction = (min: number, max: number): Schema => ({ t: 'number', min, max, fractions: true });
export const ip: Schema = { t: 'ip' };
export const cidr: Schema = { t: 'cidr' };
export const port: Schema = { t: 'port' };
export const labels: Schema = { t: 'labels' };
export const list = (of: Schema): Schema => ({ t: 'list', of });
export const mapOf = (of: Schema): Schema => ({ t: 'map', of });
export const oneOf = (...values: string[]): Schema => ({ t: 'enum', values });
export const obj = (fields: Record<string, Schema | Field>, opts: { strict?: boolean; atLeastOne?: string[] } = {}): Schema => ({
  t: 'object',
  fields: Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, 's' in v ? v : { s: v }])),
  ...opts,
});
export const req = (s: Schema): Field => ({ s, required: true });

/** IANA_SVC_NAME as Kubernetes validates a named port */
const SVC_NAME = /^(?=.{1,15}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

const typeName = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'list' : typeof v === 'object' ? 'mapping' : typeof v);
const show = (v: unknown): string => JSON.stringify(v) ?? String(v);
const join = (path: string, key: string): string => (path === '' ? key : `${path}.${key}`);

export const isMapping = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** a port written as a number or numeric string, or undefined when it is not one */
export function parsePort(v: unknown): number | undefined {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^[0-9]+$/.test(v) ? Number(v) : NaN;
  return Number.isInteger(n) && n >= 1 && n <= 65535 ? n : undefined;
}

function isCidr(v: string): boolean {
  const [addr, len, extra] = v.split('/');
  if (addr === undefined || len === undefined || extra !== undefined || !/^[0-9]+$/.test(len)) return false;
  const family = isIP(addr);
  return family !== 0 && Number(len) <= (family === 4 ? 32 : 128);
}

/** the first problem in `v`, or undefined when it conforms; null counts as absent, as in Kubernetes */
export function check(s: Schema, v: unknown, path: string): Issue | undefined {
  const bad = (reason: string): Issue => ({ path, reason });
  switch (s.t) {
    case 'string':
      if (typeof v !== 'string') return bad(`expected a string, got ${typeName(v)}`);
      return s.nonEmpty && v === '' ? bad('must not be empty') : undefined;
    case 'bool':
      return typeof v === 'boolean' ? undefined : bad(`expected true or false, got ${typeName(v)}`);
    case 'number':
      if (typeof v !== 'number' || !Number.isFinite(v)) return bad(`expected a number, got ${typeName(v)}`);
      if (!s.fractions && !Number.isInteger(v)) return bad(`expected an integer, got ${show(v)}`);
      return v >= s.min && v <= s.max ? undefined : bad(`${v} is outside ${s.min}..${s.max}`);
    case 'enum':
      return typeof v === 'string' && s.values.includes(v) ? undefined : bad(`${show(v)} is not one of ${s.values.join(', ')}`);
    case 'ip':
      return typeof v === 'string' && (isIP(v) !== 0 || s.also?.includes(v) === true) ? undefined : bad(`${show(v)} is not an IP address`);
    case 'cidr':
      return typeof v === 'string' && isCidr(v) ? undefined : bad(`${show(v)} is not a CIDR`);
    case 'port':
      return parsePort(v) !== undefined ? undefined : bad(`${show(v)} is not a port number`);
    case 'portOrName':
      if (typeof v === 'number') return parsePort(v) !== undefined ? undefined : bad(`${show(v)} is not a port number`);
      return typeof v === 'string' && SVC_NAME.test(v) ? undefined : bad(`${show(v)} is not a port number or port name`);
    case 'labels': {
      if (!isMapping(v)) return bad(`expected a mapping, got ${typeName(v)}`);
      for (const [k, val] of Object.entries(v)) {
        if (typeof val !== 'string') return { path: join(path, k), reason: `expected a string, got ${typeName(val)} (quote it)` };
      }
      return undefined;
    }
    case 'map': {
      if (!isMapping(v)) return bad(`expected a mapping, got ${typeName(v)}`);
      for (const [k, val] of Object.entries(v)) {
        const issue = check(s.of, val, join(path, k));
        if (issue) return issue;
      }
      return undefined;
    }
    case 'list': {
      if (!Array.isArray(v)) return bad(`expected a list, got ${typeName(v)}`);
      for (let i = 0; i < v.length; i++) {
        const issue = check(s.of, v[i], `${path}[${i}]`);
        if (issue) return issue;
      }
      return undefined;
    }
    case 'object': {
      if (!isMapping(v)) return bad(`expected a mapping, got ${typeName(v)}`);
      for (const [k, f] of Object.entries(s.fields)) {
        const val = v[k];
        if (val === undefined || val === null) {
          if (f.required) return { path: join(path, k), reason: 'is required' };
          continue;
        }
        const issue = check(f.s, val, join(path, k));
        if (issue) return issue;
      }
      // strict objects are the nodal policy kinds: an unsupported Istio field silently
      // ignored would make a policy admit more than its author wrote
      if (s.strict) {
        const unknown = Object.keys(v).find((k) => !(k in s.fields));
        if (unknown !== undefined) return { path: join(path, unknown), reason: `unknown field (supported: ${Object.keys(s.fields).join(', ')})` };
      }
      // an empty list counts as unset, as in Istio: `principals: []` must not become "any source"
      const isSet = (x: unknown): boolean => x !== undefined && x !== null && !(Array.isArray(x) && x.length === 0);
      if (s.atLeastOne && !s.atLeastOne.some((k) => isSet(v[k]))) {
        return bad(`must set at least one of ${s.atLeastOne.join(', ')}`);
      }
      return undefined;
    }
  }
}
