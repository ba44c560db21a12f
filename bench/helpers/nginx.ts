// nginx configuration for the benchmarks: one worker, every path under the bench's own
// folder (pid, temp files), no access log, keep-alive connections kept for a long run.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** writes <dir>/<name>.conf with `body` inside its http block; returns its path */
export function nginxConf(dir: string, name: string, body: string): string {
  const path = join(dir, `${name}.conf`);
  writeFileSync(path, `worker_processes 1;
pid ${dir}/${name}.pid;
error_log stderr warn;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/${name}-body;
  proxy_temp_path ${dir}/${name}-proxy;
  fastcgi_temp_path ${dir}/${name}-fcgi;
  uwsgi_temp_path ${dir}/${name}-uwsgi;
  scgi_temp_path ${dir}/${name}-scgi;
  keepalive_requests 1000000;
${body}
}
`);
  return path;
}
