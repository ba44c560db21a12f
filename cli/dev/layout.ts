// Where the sandbox keeps things: a contract with the agent and the control plane, which
// are started with these paths. NODAL_SANDBOX_ROOT moves the state and run folders (tests
// use it); the global names (netns, cgroup, pins) stay the same, so only one sandbox can
// be up on a machine at a time.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const DEFAULT_STATE_DIR = '/var/lib/nodal/sandbox';
export const DEFAULT_RUN_DIR = '/run/nodal/sandbox';

export interface SandboxLayout {
  /** durable state: config/, control/, nodes/<node>/, sandbox.json */
  stateDir: string;
  /** the control plane's config directory: every applied object as its own YAML file */
  configDir: string;
  controlDir: string;
  stateFile: string;
  /** sockets, logs, the lock */
  runDir: string;
  relaySocket: string;
  logsDir: string;
  lockFile: string;
  nodeStateDir(node: string): string;
  observerSocket(node: string): string;
  logFile(process: string): string;
}

export function sandboxLayout(root: string | undefined = process.env.NODAL_SANDBOX_ROOT || undefined): SandboxLayout {
  const stateDir = root ? join(root, 'state') : DEFAULT_STATE_DIR;
  const runDir = root ? join(root, 'run') : DEFAULT_RUN_DIR;
  const logsDir = join(runDir, 'logs');
  return {
    stateDir,
    configDir: join(stateDir, 'config'),
    controlDir: join(stateDir, 'control'),
    stateFile: join(stateDir, 'sandbox.json'),
    runDir,
    relaySocket: join(runDir, 'relay.sock'),
    logsDir,
    lockFile: join(runDir, 'lock'),
    nodeStateDir: (node) => join(stateDir, 'nodes', node),
    observerSocket: (node) => join(runDir, node, 'observer.sock'),
    logFile: (name) => join(logsDir, `${name}.log`),
  };
}

/** the repository root, found from this file whether it runs from cli/ or dist/cli/ */
function findRepoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'nodal') return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error(`cannot find the nodal repository root above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

export const repoRoot = findRepoRoot();
export const examplesDir = join(repoRoot, 'deploy/local/examples');
export const agentMain = join(repoRoot, 'dist/agent/main.js');
export const controlMain = join(repoRoot, 'dist/control/main.js');
export const bpfObjectsDir = join(repoRoot, 'bpf/build');
