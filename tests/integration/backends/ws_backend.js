// A WebSocket backend for the tunnel tests (node ws_backend.js PORTFILE
// EVENTS): the RFC 6455 handshake by hand (no npm package needed), then, per
// connection, what the query asks:
//   ?after=halfclose&bytes=N  when the client's direction ends (a half-close
//                             forwarded by the tunnel), send one binary frame
//                             of N bytes, then close the connection.
//   ?after=hold               keep the connection until the peer ends it,
//                             then end ours.
// EVENTS gets lines "<what> <tag> <CLOCK_MONOTONIC us>": "open" after the
// handshake, "end" when the client's direction ended, "close" when the
// connection closed (for any reason).
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const net = require('net');

const [portFile, eventsFile] = process.argv.slice(2);
const events = fs.openSync(eventsFile, 'a');

function note(what, tag) {
  const us = process.hrtime.bigint() / 1000n;
  fs.writeSync(events, `${what} ${tag} ${us}\n`);
}

// A single unmasked binary frame (server to client frames are not masked).
function binaryFrame(n) {
  let header;
  if (n < 126) {
    header = Buffer.from([0x82, n]);
  } else if (n < 65536) {
    header = Buffer.alloc(4);
    header[0] = 0x82;
    header[1] = 126;
    header.writeUInt16BE(n, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = 0x82;
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(n), 2);
  }
  return Buffer.concat([header, Buffer.alloc(n, 0x61)]);
}

function handshake(sock, head) {
  const text = head.toString('latin1');
  const key = /^sec-websocket-key:\s*(\S+)/im.exec(text);
  const target = /^GET (\S+) /.exec(text);
  if (!key || !target) {
    sock.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n');
    return;
  }
  const url = new URL(target[1], 'http://backend');
  const tag = url.searchParams.get('t') || '-';
  const accept = crypto.createHash('sha1')
    .update(key[1] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
  sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n' +
             'Connection: Upgrade\r\nSec-WebSocket-Accept: ' + accept + '\r\n\r\n');
  note('open', tag);
  sock.on('end', () => {
    note('end', tag);
    if (url.searchParams.get('after') === 'halfclose') {
      sock.end(binaryFrame(Number(url.searchParams.get('bytes') || '65536')));
    } else {
      sock.end();
    }
  });
  sock.on('close', () => note('close', tag));
}

const server = net.createServer({ allowHalfOpen: true }, (sock) => {
  let head = Buffer.alloc(0);
  const onData = (chunk) => {
    head = Buffer.concat([head, chunk]);
    if (head.indexOf('\r\n\r\n') >= 0) {
      sock.removeListener('data', onData);
      handshake(sock, head);
      sock.resume();  // frames the client sends are read and dropped
    }
  };
  sock.on('data', onData);
  sock.on('error', () => {});
});

server.listen(0, '127.0.0.1', () => {
  fs.writeFileSync(portFile + '.tmp', String(server.address().port));
  fs.renameSync(portFile + '.tmp', portFile);
});
