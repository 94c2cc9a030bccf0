// Tests are TypeScript, run through tsx; node tests load the compiled dist/.
module.exports = {
  require: ['tsx/cjs'],
  extension: ['ts'],
  spec: ['test/**/*.test.ts'],
  // The real-network suite has its own config and command (npm run test:mixnet).
  ignore: ['test/mixnet/**'],
  timeout: 30000,
  reporter: require.resolve('./test/support/reporter.cjs'),
  exit: true,
};
