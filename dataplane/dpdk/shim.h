/* The static inline functions of DPDK that cradle's `dpdk` backend calls, as real functions
 * (bindgen cannot bind an inline function). Nothing here but one call or field access each. */
#ifndef CRADLE_DPDK_SHIM_H
#define CRADLE_DPDK_SHIM_H

#include <stdint.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

uint16_t cradle_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t cradle_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
struct rte_mbuf *cradle_pktmbuf_alloc(struct rte_mempool *pool);
void cradle_pktmbuf_free(struct rte_mbuf *m);
/* rte_pktmbuf_mtod: the first byte of the data. */
uint8_t *cradle_mbuf_data(struct rte_mbuf *m);
uint16_t cradle_mbuf_data_len(const struct rte_mbuf *m);
uint16_t cradle_mbuf_segments(const struct rte_mbuf *m);
/* Bytes from the start of the data to the end of the buffer (data_len + tailroom). */
uint16_t cradle_mbuf_room(const struct rte_mbuf *m);
/* Sets data_len and pkt_len of a one-segment mbuf. */
void cradle_mbuf_set_len(struct rte_mbuf *m, uint16_t len);
/* rte_errno (a thread-local behind a macro). */
int cradle_errno(void);

#endif
