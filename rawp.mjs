import { hash } from '@node-rs/argon2';
const O = { memoryCost: 19456, timeCost: 2, parallelism: 1, algorithm: 2 };
async function raw(par, sec){ const dl=performance.now()+sec*1000; let done=0; const t0=performance.now(); const r0=process.resourceUsage();
 await Promise.all(Array.from({length:par}, async()=>{ while(performance.now()<dl){ await hash('p'+done,O); done++; } }));
 const r1=process.resourceUsage(); const s=(performance.now()-t0)/1000; return {par, rate:(done/s).toFixed(1), cpuPer:(((r1.userCPUTime-r0.userCPUTime)+(r1.systemCPUTime-r0.systemCPUTime))/1000/done).toFixed(2), sysPer:((r1.systemCPUTime-r0.systemCPUTime)/1000/done).toFixed(2), flt: ((r1.minorPageFault-r0.minorPageFault)/done).toFixed(0)}; }
await raw(2,1);
for (let i=0;i<2;i++){ console.log(Object.keys(process.env).filter(k=>k.startsWith('MIMALLOC')).join(','), await raw(2,3)); }
