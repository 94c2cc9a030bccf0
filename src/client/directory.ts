/**
 * The network's directory as the client sees it: the PKI documents the
 * daemon pushes (the last 5 epochs kept), the signed document on request,
 * service and courier lookup, and the directory authorities (§3.13, §9.3).
 */
import { requestQueryId } from './crypto';
import { InvalidArgumentError, ServiceNotFoundError } from './errors';
import type { ThinClientEvent } from './events';
import { decodePkiEvent, replies } from './messages';
import type { RawBody } from './messages';
import { findCouriers, findServices, parsePkiDocument, pickDistinctCouriers, pickRandom } from './pki';
import type { CourierDescriptor, PkiDocument, ServiceDescriptor } from './pki';
import type { RequestTable } from './requests';
import type { CallOptions, DirectoryAuthority, Logger, RawPkiDocument } from './types';
import { describeValue, integerInRange, u64Arg } from './validate';
import { requestBodies } from '../wire';

const PKI_CACHE_EPOCHS = 5;
const U32_MAX = 0xffffffff;

export class Directory {
  private current: PkiDocument | null = null;
  private readonly documents = new Map<number, PkiDocument>();

  constructor(
    private readonly requests: RequestTable,
    private readonly publish: (ev: ThinClientEvent) => void,
    private readonly log: Logger,
  ) {}

  /** A new_pki_document_event: parse it, keep it, publish it. A document that does not parse is skipped. */
  onPkiEvent(body: RawBody): void {
    const payload = decodePkiEvent(body);
    if (!payload) {
      this.log.debug('the daemon has no PKI document yet');
      return;
    }
    let doc: PkiDocument;
    try {
      doc = parsePkiDocument(payload);
    } catch (e) {
      // The Go binding logs and skips a document it cannot parse; so do we.
      this.log.warn(`ignoring a PKI document that does not parse: ${(e as Error).message}`);
      return;
    }
    this.current = doc;
    this.documents.delete(doc.epoch); // re-insert so it counts as newest
    this.documents.set(doc.epoch, doc);
    while (this.documents.size > PKI_CACHE_EPOCHS) {
      this.documents.delete(Math.min(...this.documents.keys()));
    }
    this.publish({ type: 'newPkiDocument', document: doc, payload });
  }

  pkiDocument(): PkiDocument | null {
    return this.current;
  }

  pkiDocumentForEpoch(epoch: number | bigint): PkiDocument | null {
    const e = u64Arg('epoch', epoch);
    return e > BigInt(Number.MAX_SAFE_INTEGER) ? null : (this.documents.get(Number(e)) ?? null);
  }

  async getPkiDocumentRaw(epoch: number | bigint, opts?: CallOptions): Promise<RawPkiDocument> {
    const e = u64Arg('epoch', epoch);
    return replies.getPkiDocument(await this.requests.local('get_pki_document', requestBodies.getPkiDocument(requestQueryId(), e), 'getPkiDocumentRaw', 'epoch', opts));
  }

  getServices(capability: string): ServiceDescriptor[] {
    if (typeof capability !== 'string' || capability === '') {
      throw new InvalidArgumentError('capability', 'a non-empty string', describeValue(capability));
    }
    return findServices(this.current, capability);
  }

  getService(capability: string): ServiceDescriptor {
    return pickRandom(this.getServices(capability));
  }

  getAllCouriers(): CourierDescriptor[] {
    return findCouriers(this.current);
  }

  getDistinctCouriers(n: number): CourierDescriptor[] {
    integerInRange('n', n, 1, U32_MAX);
    return pickDistinctCouriers(this.getAllCouriers(), n);
  }

  getCourierDestination(): CourierDescriptor {
    const all = this.getAllCouriers();
    if (all.length === 0) throw new ServiceNotFoundError('courier');
    return pickRandom(all);
  }

  /** kpclientd v0.0.99+ only: the request table refuses it for a pinned daemon without sending it. */
  async getDirectoryAuthorities(opts?: CallOptions): Promise<DirectoryAuthority[]> {
    const body = requestBodies.getDirectoryAuthorities(requestQueryId());
    return replies.getDirectoryAuthorities(await this.requests.local('get_directory_authorities', body, 'getDirectoryAuthorities', 'query', opts));
  }
}
