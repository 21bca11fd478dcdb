/** Small stroke icons (inline SVG, currentColor) used across the UI. */
import type { JSX } from 'preact';

function Icon(props: { d: string | string[]; size?: number } & Omit<JSX.SVGAttributes<SVGSVGElement>, 'd'>) {
  const { d, size = 16, ...rest } = props;
  return (
    <svg width={size} height={size} viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width={1.8}
      stroke-linecap="round" stroke-linejoin="round" aria-hidden="true" {...rest}>
      {(Array.isArray(d) ? d : [d]).map((p) => <path d={p} key={p} />)}
    </svg>
  );
}

export const IconWorkspaces = () => <Icon d={['M3 7.5 12 3l9 4.5-9 4.5z', 'M3 12l9 4.5 9-4.5', 'M3 16.5 12 21l9-4.5']} />;
export const IconLogs = () => <Icon d={['M5 4h14v16H5z', 'M9 9h6', 'M9 13h6', 'M9 17h3']} />;
export const IconSettings = () => (
  <Icon d={['M12 15a3 3 0 1 0 0-6 3 3 0 0 0 0 6z', 'M19.4 15a1.7 1.7 0 0 0 .3 1.8l.1.1a2 2 0 1 1-2.8 2.8l-.1-.1a1.7 1.7 0 0 0-1.8-.3 1.7 1.7 0 0 0-1 1.5V21a2 2 0 1 1-4 0v-.1a1.7 1.7 0 0 0-1.1-1.5 1.7 1.7 0 0 0-1.8.3l-.1.1a2 2 0 1 1-2.8-2.8l.1-.1a1.7 1.7 0 0 0 .3-1.8 1.7 1.7 0 0 0-1.5-1H3a2 2 0 1 1 0-4h.1a1.7 1.7 0 0 0 1.5-1.1 1.7 1.7 0 0 0-.3-1.8l-.1-.1a2 2 0 1 1 2.8-2.8l.1.1a1.7 1.7 0 0 0 1.8.3H9a1.7 1.7 0 0 0 1-1.5V3a2 2 0 1 1 4 0v.1a1.7 1.7 0 0 0 1 1.5 1.7 1.7 0 0 0 1.8-.3l.1-.1a2 2 0 1 1 2.8 2.8l-.1.1a1.7 1.7 0 0 0-.3 1.8V9a1.7 1.7 0 0 0 1.5 1H21a2 2 0 1 1 0 4h-.1a1.7 1.7 0 0 0-1.5 1z']} />
);
export const IconInfo = () => <Icon d={['M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18z', 'M12 11v5', 'M12 8h.01']} />;
export const IconCopy = () => <Icon size={14} d={['M9 9h11v11H9z', 'M5 15H4V4h11v1']} />;
export const IconCheck = () => <Icon size={14} d="M5 12.5l4.5 4.5L19 7.5" />;
export const IconSearch = () => <Icon size={15} d={['M11 18a7 7 0 1 0 0-14 7 7 0 0 0 0 14z', 'M20 20l-4-4']} />;
export const IconRefresh = () => <Icon size={14} d={['M20 11a8 8 0 0 0-14.9-3.5', 'M4 4v4h4', 'M4 13a8 8 0 0 0 14.9 3.5', 'M20 20v-4h-4']} />;
export const IconAlert = ({ size = 16 }: { size?: number }) => <Icon size={size} d={['M12 3 2 20h20z', 'M12 10v4', 'M12 17h.01']} />;
export const IconX = () => <Icon size={14} d={['M6 6l12 12', 'M18 6 6 18']} />;

/** The Warren mark: a burrow entrance (an arch over a line) in a rounded tile. */
export function Logo({ size = 28 }: { size?: number }) {
  return (
    <svg width={size} height={size} viewBox="0 0 32 32" aria-hidden="true" class="logo">
      <rect width="32" height="32" rx="8" fill="var(--accent)" />
      <path d="M8 23v-5a8 8 0 0 1 16 0v5" fill="none" stroke="#fff" stroke-width="2.6" stroke-linecap="round" />
      <path d="M6 23h20" stroke="#fff" stroke-width="2.6" stroke-linecap="round" />
      <circle cx="16" cy="18.5" r="2.2" fill="#fff" />
    </svg>
  );
}
