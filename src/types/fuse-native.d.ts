// The part of fuse-native's API this project uses (the package ships no types).
declare module 'fuse-native' {
  namespace Fuse {
    type Operations = Record<string, (...args: never[]) => void>;
    interface Options {
      force?: boolean;
      mkdir?: boolean;
      allowOther?: boolean;
      defaultPermissions?: boolean;
      kernelCache?: boolean;
      autoCache?: boolean;
      entryTimeout?: number;
      attrTimeout?: number;
      maxRead?: number;
      fsname?: string;
      subtype?: string;
      debug?: boolean;
      timeout?: number | false;
    }
  }
  class Fuse {
    constructor(mountpoint: string, ops: Fuse.Operations, options?: Fuse.Options);
    mount(cb: (err: Error | null) => void): void;
    unmount(cb: (err?: Error | null) => void): void;
    static unmount(mountpoint: string, cb: (err?: Error | null) => void): void;
    static isConfigured(cb: (err: Error | null, configured: boolean) => void): void;
    /** Open flag bits for `cb(0, fd, flags)`: only with native/fuse-native-open-flags.patch built, else undefined. */
    static OPEN_DIRECT_IO: number | undefined;
    static OPEN_KEEP_CACHE: number | undefined;
  }
  export = Fuse;
}
