// Tests are TypeScript, run through tsx; node tests load the compiled dist/.
module.exports = {
  require: ['tsx/cjs'],
  extension: ['ts'],
  spec: ['test/**/*.test.ts'],
  // The real-network suite has its own config and command (npm run test:mixnet).
  // The reference Python binding needs a venv: scripts/ci-reference-clients.sh runs it, once per binding version.
  ignore: ['test/mixnet/**', 'test/emulator/python-reference.test.ts'],
  timeout: 30000,
  reporter: require.resolve('./test/support/reporter.cjs'),
  exit: true,
};
