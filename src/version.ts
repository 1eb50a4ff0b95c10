/** The cvmfs-ts version, reported by --version, user.version and the User-Agent. */
export const VERSION = '0.1.0';
