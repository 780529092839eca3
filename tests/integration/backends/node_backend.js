// A proxied backend that knows nothing of httpd: a plain Node.js server that
// notices a client leaving the way Node apps do, by the response's 'close'
// event firing before the response was ended.
//
//   node node_backend.js PORT_FILE EVENT_LOG
//
// Listens on 127.0.0.1, on a port the kernel picks, which it writes to
// PORT_FILE once it accepts connections. GET /slow?t=TAG&ms=MS[&flush=1]
// answers after MS ms (with flush=1 it sends the headers and "started\n"
// first). EVENT_LOG gets one line per event, "start TAG US" when a request
// arrives and "close TAG US" when its connection closed before the answer
// was complete; US is CLOCK_MONOTONIC in microseconds (the test client's
// clock: process.hrtime is CLOCK_MONOTONIC on Linux).
'use strict';
const fs = require('fs');
const http = require('http');

const [portFile, eventLog] = process.argv.slice(2);
const nowUs = () => process.hrtime.bigint() / 1000n;
const note = (what, tag) => fs.appendFileSync(eventLog, `${what} ${tag} ${nowUs()}\n`);

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://backend');
  const tag = url.searchParams.get('t') || '-';
  const ms = Number(url.searchParams.get('ms') || '1000');
  note('start', tag);
  const timer = setTimeout(() => res.end('done\n'), ms);
  res.on('close', () => {
    if (!res.writableEnded) {
      clearTimeout(timer);
      note('close', tag);
    }
  });
  if (url.searchParams.get('flush') === '1') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('started\n');
  }
});
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => {
  fs.writeFileSync(portFile + '.tmp', String(server.address().port));
  fs.renameSync(portFile + '.tmp', portFile);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
