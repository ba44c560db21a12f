// The local sandbox (DESIGN §10): its public surface, for the CLI and for e2e tests.
//   import { Sandbox } from '../../cli/dev/index.ts';
//   const sb = new Sandbox({ root: '/tmp/x', mesh: false });
//   await sb.up({ nodes: 2 }); await sb.applyYaml(text); await sb.exec('demo/backend', ['true']); await sb.down();
export { Sandbox, isSandboxNetns, type SandboxOptions, type UpOptions, type UpResult, type DownResult } from './sandbox.ts';
export { SandboxError, ManifestError, SandboxErrorCode } from './errors.ts';
export { sandboxLayout, examplesDir, DEFAULT_RUN_DIR, DEFAULT_STATE_DIR, type SandboxLayout } from './layout.ts';
export { formatResult, type ObjectResult, type Outcome } from './apply.ts';
export { parseManifests, objectFileName, objectKey, POD_IP_ANNOTATION, type Manifest } from './manifest.ts';
export {
  planNode, planNodes, MAX_NODES, DEFAULT_NODES, UNDERLAY_NETNS, UNDERLAY_GATEWAY, POD_BRIDGE, CGROUP_ROOT_NAME,
  BPF_PIN_DIR, Ports, type NodePlan,
} from './plan.ts';
export { formatStatus, type SandboxStatus, type NodeStatus, type PodStatus } from './status.ts';
export type { SandboxState, PodRecord, NodeRecord, ProcessRecord } from './state.ts';
export type { ExecOptions, ExecResult } from './pods.ts';
export { cgroupOf } from './processes.ts';
// restarting one process of a running sandbox (e2e tests kill and restart agents)
export { startAgent, startControl, waitReady } from './mesh.ts';
export { acquireLock, saveState } from './state.ts';
export type { ProcessRecord as SandboxProcess } from './state.ts';
export { cgroup2Mount, bpffsMount } from './system.ts';
