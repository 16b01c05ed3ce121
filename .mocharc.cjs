/**
 * mocha's options. Its files: every test, or the ones VMDR_TEST_FILES names (paths or globs, split
 * on white space): scripts/test runs the lab's and the others in two mocha processes at once, and
 * files given to mocha on its command line would come on top of a spec given here.
 */
module.exports = {
  'node-option': ['import=tsx', 'no-experimental-require-module'],
  extension: ['ts'],
  spec: process.env.VMDR_TEST_FILES ? process.env.VMDR_TEST_FILES.split(/\s+/).filter(Boolean) : ['test/**/*.test.ts'],
  timeout: 60000,
  reporter: 'spec',
};
