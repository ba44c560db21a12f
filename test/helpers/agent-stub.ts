// A stand-in agent for kernel tests: opens the datapath with the config in argv[2]
// (JSON), reconciles the desired state in argv[3] (JSON, bigint cgroup ids as strings),
// prints {ready, report}, then waits to be killed, as an agent process would.
import { Datapath, type DatapathConfig, type DesiredState } from '../../agent/datapath/index.ts';

const config = JSON.parse(process.argv[2] ?? '{}') as DatapathConfig;
const raw = JSON.parse(process.argv[3] ?? '{}') as DesiredState & { endpoints: Array<{ cgroupId: string }> };
const desired: DesiredState = { ...raw, endpoints: raw.endpoints.map((e) => ({ ...e, cgroupId: BigInt(e.cgroupId) })) } as DesiredState;

try {
  const dp = await Datapath.open(config);
  dp.reconcile(desired);
  process.stdout.write(`${JSON.stringify({ ready: true, report: dp.report })}\n`);
  setInterval(() => {}, 1 << 30);
} catch (err) {
  const e = err as Error & { code?: string };
  process.stdout.write(`${JSON.stringify({ ready: false, code: e.code, message: e.message })}\n`);
  process.exit(1);
}
