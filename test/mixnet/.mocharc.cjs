// The real-network suite (npm run test:mixnet): against the kpclientd of
// `npm run mixnet -- start`, with timeouts sized for real mixnet latency.
module.exports = {
  require: ['tsx/cjs'],
  extension: ['ts'],
  // scripts/test-mixnet.mjs runs one file per process and names it here (files given to mocha would add to spec, not replace it).
  spec: process.env.KATZENPOST_MIXNET_SPEC ? [process.env.KATZENPOST_MIXNET_SPEC] : ['test/mixnet/**/*.test.ts'],
  timeout: 10 * 60 * 1000,
  slow: 60 * 1000,
  // A real mixnet drops a packet now and then (legacy sends have no retransmission): one more try, reported as such.
  retries: 1,
  reporter: require.resolve('../support/reporter.cjs'),
  exit: true,
};
