// The example HTTP client: GET URL every INTERVAL ms, one new connection each time (so
// each call is a new L4 verdict as well as an L7 one), and log the outcome.
//   node client.mjs URL [INTERVAL_MS]
import { get } from 'node:http';

const [url, interval = '1000'] = process.argv.slice(2);
if (!url) {
  console.error('usage: client.mjs URL [INTERVAL_MS]');
  process.exit(2);
}
const who = `${process.env.POD_NAMESPACE}/${process.env.POD_NAME}`;
/** a request that takes longer than this is reported as a timeout, not waited for */
const TIMEOUT_MS = 2000;

function once() {
  const t0 = Date.now();
  const log = (outcome) => console.log(`${new Date().toISOString()} ${who} GET ${url} -> ${outcome} (${Date.now() - t0} ms)`);
  const req = get(url, { agent: false, timeout: TIMEOUT_MS }, (res) => {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (d) => { body += d; });
    res.on('end', () => {
      let from = '';
      try { from = ` from ${JSON.parse(body).pod}`; } catch { /* not JSON */ }
      log(`${res.statusCode}${from}`);
    });
  });
  req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
  req.on('error', (e) => log(`error ${e.code ?? e.message}`));
}

once();
setInterval(once, Number(interval));
