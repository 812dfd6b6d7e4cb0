// Starts s3rver on 127.0.0.1 and a free port, storing objects under the folder given
// as the first argument. Prints {"port": N} once it listens, and exits when its stdin
// closes, so it never outlives the test session that started it.
"use strict";

const S3rver = require("s3rver");

const directory = process.argv[2];
if (!directory) {
  console.error("usage: node serve.js DIRECTORY");
  process.exit(2);
}

const server = new S3rver({ address: "127.0.0.1", port: 0, directory, silent: true });
server.run().then(
  (address) => {
    process.stdout.write(JSON.stringify({ port: address.port }) + "\n");
  },
  (err) => {
    console.error(`s3rver did not start: ${err.stack || err}`);
    process.exit(1);
  },
);

process.stdin.resume();
process.stdin.on("end", () => server.close().then(() => process.exit(0)));
