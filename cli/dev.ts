// `nodal dev ...`: the local sandbox (DESIGN §10). The commands are thin: parsing and
// printing here, the work in cli/dev/ (whose Sandbox class the e2e tests drive directly).
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import type { Command } from 'commander';
import {
  DEFAULT_NODES, MAX_NODES, Sandbox, SandboxError, SandboxErrorCode, formatResult, formatStatus, type ObjectResult,
} from './dev/index.ts';

function sandbox(opts: { mesh?: boolean } = {}): Sandbox {
  return new Sandbox({ ...(opts.mesh === false ? { mesh: false } : {}), log: (line) => console.log(`  ${line}`) });
}

/** run a command body; a SandboxError becomes one clear message and exit code 1 */
async function guarded(what: string, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (err) {
    if (err instanceof SandboxError) {
      console.error(`nodal dev ${what}: ${err.message}`);
      process.exitCode = 1;
      return;
    }
    throw err;
  }
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function printResults(results: readonly ObjectResult[]): void {
  for (const r of results) console.log(formatResult(r));
}

export function registerDev(program: Command): void {
  const dev = program.command('dev')
    .description('the local sandbox: nodes and pods as network namespaces and cgroups on this machine')
    .enablePositionalOptions();

  dev.command('up')
    .description('build the sandbox: underlay, nodes, control plane, one agent per node, examples')
    .option('--nodes <n>', `number of nodes (1..${MAX_NODES})`, (v) => Number(v), DEFAULT_NODES)
    .option('--no-examples', 'do not apply deploy/local/examples')
    .option('--no-mesh', 'topology and pods only, no control plane or agents (also NODAL_DEV_NO_MESH=1)')
    .option('--timeout <seconds>', 'how long to wait for the agents to be ready', (v) => Number(v), 60)
    .action((opts: { nodes: number; examples: boolean; mesh: boolean; timeout: number }) => guarded('up', async () => {
      const sb = sandbox({ mesh: opts.mesh });
      console.log(`nodal dev up: ${opts.nodes} node(s)${sb.mesh ? '' : ', no mesh'}`);
      const r = await sb.up({ nodes: opts.nodes, examples: opts.examples, readyTimeoutMs: opts.timeout * 1000 });
      if (r.examples.length > 0) {
        console.log('examples:');
        for (const e of r.examples) console.log(`  ${formatResult(e)}`);
      }
      console.log('');
      console.log(formatStatus(sb.status()));
      console.log(`
look further:
  nodal observe -f                              every connection and request, live
  nodal dev status [-o json]                    nodes, pods, identities, enrollment
  nodal dev exec demo/frontend -- curl -s http://10.96.0.20/api/items
  nodal dev logs demo/frontend [-f]             a pod's output (all logs: ${sb.layout.logsDir})
  nodal dev apply -f FILE|DIR                   more namespaces, pods, services, policies
  nodal dev down                                remove every trace`);
    }));

  dev.command('down')
    .description('remove every trace of the sandbox: processes, netns, links, cgroups, BPF pins, state')
    .action(() => guarded('down', async () => {
      const r = await sandbox().down();
      if (r.removed.length === 0) console.log('nothing to remove: no sandbox on this machine');
      else for (const what of r.removed) console.log(`removed ${what}`);
    }));

  dev.command('apply')
    .description('create or update objects (Namespace, Pod, Service, MeshPolicy, ...) from YAML')
    .requiredOption('-f, --filename <path>', 'a file, a folder of .yaml files, or - for stdin (repeatable)', collect, [])
    .action((opts: { filename: string[] }) => guarded('apply', async () => {
      printResults(await sandbox().apply(opts.filename));
    }));

  dev.command('delete')
    .description('delete the objects a file describes; pods stop and lose their netns and cgroup')
    .requiredOption('-f, --filename <path>', 'a file, a folder of .yaml files, or - for stdin (repeatable)', collect, [])
    .option('--ignore-not-found', 'objects that do not exist are not an error')
    .action((opts: { filename: string[]; ignoreNotFound?: boolean }) => guarded('delete', async () => {
      const results = await sandbox().delete(opts.filename);
      printResults(results);
      if (!opts.ignoreNotFound && results.some((r) => r.outcome === 'not found')) process.exitCode = 1;
    }));

  dev.command('exec')
    .description('run a command inside a pod (its netns and cgroup); the exit code is passed through')
    .argument('<pod>', 'NAMESPACE/POD')
    .argument('<command...>', 'the command, after --')
    .passThroughOptions()
    .action((pod: string, command: string[]) => guarded('exec', async () => {
      // passThroughOptions hands `--` on with the operands after POD: it separates, it is not the command
      const argv = command[0] === '--' ? command.slice(1) : command;
      if (argv.length === 0) throw new SandboxError(SandboxErrorCode.COMMAND, 'exec needs a command: nodal dev exec NAMESPACE/POD -- CMD [ARGS...]');
      // Ctrl-C and Ctrl-\ reach the command through the terminal; this process stays to report its exit code
      const ignore = (): void => {};
      process.on('SIGINT', ignore).on('SIGQUIT', ignore);
      try {
        const r = await sandbox().exec(pod, argv, { stdio: 'inherit' });
        process.exitCode = r.code;
      } finally {
        process.off('SIGINT', ignore).off('SIGQUIT', ignore);
      }
    }));

  dev.command('status')
    .description('nodes, agents, pods, addresses, identities and enrollment')
    .option('-o, --output <format>', 'table or json', 'table')
    .action((opts: { output: string }) => guarded('status', async () => {
      const s = sandbox().status();
      if (opts.output === 'json') console.log(JSON.stringify(s, null, 2));
      else if (opts.output === 'table') console.log(formatStatus(s));
      else throw new SandboxError(SandboxErrorCode.MANIFEST, `-o must be table or json, got "${opts.output}"`);
    }));

  dev.command('logs')
    .description('the log of a pod (NAMESPACE/POD), an agent (node-N) or the control plane (control)')
    .argument('<target>', 'NAMESPACE/POD, node-N or control')
    .option('-c, --container <name>', 'the container (default: the first)')
    .option('-f, --follow', 'keep printing as the log grows')
    .action((target: string, opts: { container?: string; follow?: boolean }) => guarded('logs', async () => {
      const sb = sandbox();
      let file: string;
      if (target === 'control') file = sb.layout.logFile('control');
      else if (/^node-\d+$/.test(target)) file = sb.layout.logFile(`agent-${target}`);
      else {
        const pod = sb.pod(target);
        const c = opts.container === undefined ? pod.containers[0] : pod.containers.find((x) => x.name === opts.container);
        if (!c) throw new SandboxError(SandboxErrorCode.NOT_FOUND, `pod ${target} has no container ${opts.container} (containers: ${pod.containers.map((x) => x.name).join(', ')})`);
        file = sb.layout.logFile(`pod.${pod.namespace}.${pod.name}.${c.name}`);
      }
      if (!existsSync(file)) throw new SandboxError(SandboxErrorCode.NOT_FOUND, `no log at ${file}`);
      if (!opts.follow) {
        process.stdout.write(readFileSync(file));
        return;
      }
      await new Promise<void>((resolve) => {
        spawn('tail', ['-n', '+1', '-F', file], { stdio: 'inherit' }).on('close', () => resolve());
      });
    }));
}
