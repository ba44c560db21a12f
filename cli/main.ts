#!/usr/bin/env node
// nodal: the operator's command. Each subcommand lives in its own module and registers
// itself here; `nodal --help` is generated from those registrations, so it stays true.
import { Command } from 'commander';
import { registerDev } from './dev.ts';
import { registerObserve } from './observe.ts';
import { registerPolicy } from './policy.ts';
import { registerStatus } from './status.ts';
import { registerTop } from './top.ts';

const program = new Command('nodal')
  .description('a node-level service mesh: enroll by label, policy by identity, flows you can trust')
  .showHelpAfterError()
  // options after a subcommand belong to it: `nodal dev exec ns/pod ip -br link` works
  .enablePositionalOptions();

registerDev(program);
registerObserve(program);
registerStatus(program);
registerPolicy(program);
registerTop(program);

await program.parseAsync(process.argv);
